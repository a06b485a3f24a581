"""tagseg: guidance-free open-vocabulary semantic segmentation (TAG).

>>> from tagseg import TAG
>>> tag = TAG.from_pretrained("paper")
>>> result = tag("photo.jpg")
>>> [(s.label, round(s.score, 2), s.area) for s in result.segments]

Heavy modules (torch, transformers, faiss) load on first use of a name that needs them, so
``import tagseg`` and the command line's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from tagseg.config import CRFSettings, TAGConfig, load_config, preset
from tagseg.errors import ConfigError, DatabaseError, ImageError, ModelNotAvailableError, TagsegError

if TYPE_CHECKING:
    from tagseg.image import load_image
    from tagseg.pipeline import TAG
    from tagseg.result import Candidate, Retrieved, Segment, Segmentation

try:
    __version__ = version("tagseg")
    """The installed distribution's version (``pyproject.toml`` is its one home)."""
except PackageNotFoundError:  # sources on the path without an installed distribution
    __version__ = "0+unknown"

_LAZY = {
    "TAG": "tagseg.pipeline",
    "load_image": "tagseg.image",
    "Candidate": "tagseg.result",
    "Retrieved": "tagseg.result",
    "Segment": "tagseg.result",
    "Segmentation": "tagseg.result",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tagseg' has no attribute {name!r}")


__all__ = [
    "TAG",
    "CRFSettings",
    "Candidate",
    "ConfigError",
    "DatabaseError",
    "ImageError",
    "ModelNotAvailableError",
    "Retrieved",
    "Segment",
    "Segmentation",
    "TAGConfig",
    "TagsegError",
    "__version__",
    "load_config",
    "load_image",
    "preset",
]
