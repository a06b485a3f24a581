"""Deprecated: moved to :mod:`tagseg.backbones.clip`."""

from tagseg.deprecation import moved_module

__getattr__, __dir__ = moved_module(__name__, "tagseg.backbones.clip")
