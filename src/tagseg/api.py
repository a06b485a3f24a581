"""Deprecated: the former catch-all module. Its names moved to the modules that own them.

Importing them from here still works, with a :class:`DeprecationWarning` naming the new home:
the batch runner to :mod:`tagseg.batch`, the per-image record to
:meth:`tagseg.result.Segmentation.to_record` and :func:`tagseg.result.segmentation_schema`,
COCO RLE strings to :mod:`tagseg.masks`, the run file's name to :mod:`tagseg.exports.coco`,
settings resolution to :mod:`tagseg.config`, model status and downloads to :mod:`tagseg.builder`
and :mod:`tagseg.backbones.hub`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from tagseg.deprecation import moved_module
from tagseg.result import Segmentation

__getattr__, __dir__ = moved_module(
    __name__,
    "tagseg.batch",
    "tagseg.result",
    "tagseg.masks",
    "tagseg.exports.coco",
    "tagseg.config",
    "tagseg.builder",
    "tagseg.backbones.hub",
)


def image_record(result: Segmentation, path: str | Path | None = None) -> dict[str, Any]:
    """Deprecated: use :meth:`Segmentation.to_record`."""
    warnings.warn("tagseg.api.image_record(result, path) is result.to_record(path) now.", DeprecationWarning, stacklevel=2)
    return result.to_record(path)
