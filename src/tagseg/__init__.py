"""tagseg: guidance-free open-vocabulary semantic segmentation (TAG).

>>> from tagseg import TAG
>>> tag = TAG.from_pretrained("paper")
>>> result = tag("photo.jpg")
>>> [(s.label, round(s.score, 2), s.area) for s in result.segments]
"""

from tagseg.config import CRFSettings, TAGConfig, load_config, preset
from tagseg.errors import ConfigError, DatabaseError, ImageError, ModelNotAvailableError, TagsegError
from tagseg.image import load_image
from tagseg.pipeline import TAG
from tagseg.result import Candidate, Retrieved, Segment, Segmentation

__version__ = "0.1.0"

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
