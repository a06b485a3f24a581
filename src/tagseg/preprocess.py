"""Resizing between an image, the working size the models see and each model's patch grid.

* :func:`working_size` / :func:`working_image`: the image at the working size (``image_size``,
  square or keeping the aspect ratio), and :func:`working_pixels`, that copy as model input;
* :func:`fit_to_patches`: pixels resized so both sides are whole patches of one model;
* :func:`area_resize` and :func:`resize_labels`: masks and label maps moved between sizes.

Normalisation (mean/std) is not here: each model's seam applies its own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tagseg.config import ModelSettings

__all__ = ["area_resize", "fit_to_patches", "resize_labels", "working_image", "working_pixels", "working_size"]


def working_size(height: int, width: int, size: int, keep_aspect_ratio: bool) -> tuple[int, int]:
    """The (height, width) the models see: ``size`` square, or the longer side ``size`` keeping the aspect."""
    if not keep_aspect_ratio:
        return (size, size)
    scale = size / max(height, width)
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def working_image(rgb: np.ndarray, models: ModelSettings) -> np.ndarray:
    """A copy of ``rgb`` at the working size the models see (bilinear; unchanged pixels if already that size)."""
    height, width = working_size(rgb.shape[0], rgb.shape[1], models.image_size, models.keep_aspect_ratio)
    return np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def working_pixels(working: np.ndarray) -> torch.Tensor:
    """The working image ``(h, w, 3)`` uint8 as model input: ``(1, 3, h, w)`` float32 in [0, 1]."""
    return torch.from_numpy(working).permute(2, 0, 1)[None].float() / 255.0


def fit_to_patches(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) so both sides are the nearest multiple of ``patch_size``."""
    height, width = pixels.shape[-2:]
    target = (max(patch_size, round(height / patch_size) * patch_size), max(patch_size, round(width / patch_size) * patch_size))
    if target == (height, width):
        return pixels
    return F.interpolate(pixels, size=target, mode="bilinear", align_corners=False, antialias=True)


def area_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The fraction of each pixel of a (height, width) grid that ``mask`` covers (box filter).

    Unlike a nearest-neighbour resize, no region smaller than a working pixel disappears.
    """
    image = Image.fromarray(mask.astype(np.float32))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BOX), dtype=np.float32)


def resize_labels(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map to ``size`` (height, width); the map itself when already that size."""
    if label_map.shape == tuple(size):
        return label_map
    resized = Image.fromarray(label_map.astype(np.int32)).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.int32)
