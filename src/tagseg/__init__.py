"""tagseg: guidance-free open-vocabulary semantic segmentation (TAG)."""

from tagseg.errors import ConfigError, DatabaseError, ImageError, ModelNotAvailableError, TagsegError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatabaseError",
    "ImageError",
    "ModelNotAvailableError",
    "TagsegError",
    "__version__",
]
