"""What every backbone shares: loading onto a device in a dtype, the checkpoint check, and for
image backbones the pixel check and the normalisation with the model's own mean and std.

Image backbones subclass :class:`ImageBackbone`: it keeps the model in eval mode with its device
and dtype, and :meth:`ImageBackbone.model_input` turns the pipeline's ``(B, 3, H, W)`` pixels in
``[0, 1]`` into what the model expects.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import ClassVar, TypeVar

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from tagseg.backbones.hub import ModelSource, load_pretrained, read_model_json, resolve_device, source_name
from tagseg.errors import ModelNotAvailableError

__all__ = ["ImageBackbone", "check_pixels", "checked_model_config", "image_normalization", "load_model"]

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def load_model(
    model_class: type[ModelT], source: ModelSource, *, device: str | torch.device | None, dtype: torch.dtype
) -> ModelT:
    """Load ``model_class`` weights from ``source`` in ``dtype`` onto ``device`` (``"auto"``: CUDA if present)."""
    return load_pretrained(model_class, source, dtype=dtype).to(resolve_device(device))


def checked_model_config(source: ModelSource, model_types: Collection[str], family: str, example: str) -> PretrainedConfig:
    """The checkpoint's config, or a clear error when its ``model_type`` is none of ``model_types``."""
    config = load_pretrained(AutoConfig, source)
    if config.model_type not in model_types:
        raise ModelNotAvailableError(
            f"Model {source_name(source)!r} is a {config.model_type!r} model, not {family}; pass a {family} "
            f"checkpoint such as {example!r} or a directory that holds one."
        )
    return config


def image_normalization(
    source: ModelSource, default_mean: Sequence[float], default_std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pixel mean and std a model expects, from its ``preprocessor_config.json`` (defaults when absent)."""
    config = read_model_json(source, "preprocessor_config.json") or {}
    mean = tuple(float(value) for value in config.get("image_mean", default_mean))
    std = tuple(float(value) for value in config.get("image_std", default_std))
    return mean, std


def check_pixels(pixels: torch.Tensor, patch_size: int) -> None:
    """Refuse pixels that are not ``(B, 3, H, W)`` with sides a multiple of ``patch_size``."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}")
    height, width = pixels.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")


class ImageBackbone:
    """A ``transformers`` vision model behind an image seam: eval mode, device, dtype, normalisation.

    ``mean``/``std`` are the model's own (see :func:`image_normalization`); subclasses name the
    defaults used when a checkpoint has no ``preprocessor_config.json``. With ``normalize=False``
    the pixels reach the model unnormalised, as in the reference code.
    """

    default_mean: ClassVar[tuple[float, float, float]]
    default_std: ClassVar[tuple[float, float, float]]

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        model_id: str,
        patch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        normalize: bool,
    ) -> None:
        self.model = model.eval()
        self.model_id = model_id
        self.patch_size = patch_size
        self.normalize = normalize
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def _load(
        cls, model_class: type[ModelT], source: ModelSource, *, device: str | torch.device | None, dtype: torch.dtype
    ) -> tuple[ModelT, tuple[float, ...], tuple[float, ...]]:
        """The model on ``device`` in ``dtype``, with the mean and std its checkpoint asks for."""
        model = load_model(model_class, source, device=device, dtype=dtype)
        mean, std = image_normalization(source, cls.default_mean, cls.default_std)
        return model, mean, std

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Checked ``(B, 3, H, W)`` pixels in [0, 1], on the model's device, normalised, in its dtype."""
        check_pixels(pixels, self.patch_size)
        pixels = pixels.to(self.device, torch.float32)
        if self.normalize:
            pixels = (pixels - self._mean) / self._std
        return pixels.to(self.dtype)
