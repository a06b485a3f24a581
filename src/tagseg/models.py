"""Deprecated: moved to :mod:`tagseg.backbones.hub` (loading, cache) and :mod:`tagseg.backbones.base` (pixels)."""

from tagseg.deprecation import moved_module

__getattr__, __dir__ = moved_module(__name__, "tagseg.backbones.hub", "tagseg.backbones.base")
