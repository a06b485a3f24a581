"""Deprecated: moved to :mod:`tagseg.backbones.dinov2`."""

from tagseg.deprecation import moved_module

__getattr__, __dir__ = moved_module(__name__, "tagseg.backbones.dinov2")
