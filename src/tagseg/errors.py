"""Errors that tagseg raises on purpose. Every user-facing failure is one of these."""

from __future__ import annotations


class TagsegError(Exception):
    """Base class of every error tagseg raises deliberately."""


class ImageError(TagsegError, ValueError):
    """The input is not a usable image (corrupt, not an image, too small, too large, ...)."""


class ModelNotAvailableError(TagsegError, OSError):
    """A model is neither in the local cache nor reachable; the message says how to provide it."""


class DatabaseError(TagsegError):
    """A text database is missing, corrupt, empty or does not match the text model."""


class ConfigError(TagsegError, ValueError):
    """A setting has an invalid value or an unknown name."""


class MissingDependencyError(TagsegError, ImportError):
    """An optional part of tagseg is used without its extra installed; the message names the extra."""


class EvaluationError(TagsegError, ValueError):
    """A prediction or a cached prediction does not fit the image it is scored against."""
