"""What every backbone shares: loading onto a device in a dtype, the checkpoint check, and for
image backbones the pixel check and the normalisation with the model's own mean and std.

Image backbones subclass :class:`ImageBackbone`: it keeps the model in eval mode with its device
and dtype, and :meth:`ImageBackbone.model_input` turns the pipeline's ``(B, 3, H, W)`` pixels in
``[0, 1]`` into what the model expects.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from functools import cache
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from tagseg.backbones.hub import (
    ModelSource,
    load_pretrained,
    read_model_json,
    resolve_device,
    source_name,
    tensors_read_one_by_one,
)
from tagseg.config import DTYPES
from tagseg.errors import ModelNotAvailableError

__all__ = [
    "ImageBackbone",
    "check_pixels",
    "checked_model_config",
    "image_normalization",
    "load_model",
    "native_bfloat16",
    "resolve_dtype",
    "to_device",
]

ModelT = TypeVar("ModelT", bound=PreTrainedModel)

@cache
def _cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16), by its flags or torch's own query."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        queries = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in queries)
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", flags) is not None


def native_bfloat16(device: torch.device) -> bool:
    """True when ``device`` runs bfloat16 arithmetic natively: a CUDA GPU with bf16, or a CPU with AMX/AVX-512 BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bfloat16()


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The torch dtype for a dtype setting on ``device``: ``auto`` becomes bfloat16 where native, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_model(
    model_class: type[ModelT],
    source: ModelSource,
    *,
    device: str | torch.device | None,
    dtype: str | torch.dtype,
) -> ModelT:
    """Load ``model_class`` from ``source`` onto ``device`` (``"auto"``: CUDA if present).

    The weights are loaded in ``dtype`` (see :func:`resolve_dtype`). In another dtype than float32
    a safetensors checkpoint on disk is read and converted tensor by tensor
    (:func:`~tagseg.backbones.hub.tensors_read_one_by_one`), so the peak memory of the load follows
    the converted model (docs/speed.md).
    """
    target = resolve_device(device)
    resolved = resolve_dtype(dtype, target)
    if resolved == torch.float32:  # memory-mapped: nothing is read before the first forward
        return load_pretrained(model_class, source, dtype=resolved).to(target)
    with tensors_read_one_by_one(source) as state_dict:
        if state_dict is None:
            return load_pretrained(model_class, source, dtype=resolved).to(target)
        config = load_pretrained(model_class.config_class, source)
        return load_pretrained(model_class, source, dtype=resolved, config=config, state_dict=state_dict).to(target)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory, asynchronously."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
        cls,
        model_class: type[ModelT],
        source: ModelSource,
        *,
        device: str | torch.device | None,
        dtype: str | torch.dtype,
    ) -> tuple[ModelT, tuple[float, ...], tuple[float, ...]]:
        """The model on ``device`` in ``dtype``, with the mean and std its checkpoint asks for."""
        model = load_model(model_class, source, device=device, dtype=dtype)
        mean, std = image_normalization(source, cls.default_mean, cls.default_std)
        return model, mean, std

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Checked ``(B, 3, H, W)`` pixels in [0, 1], on the model's device, normalised, in its dtype.

        Any batch size works; on CUDA the pixels travel through pinned memory.
        """
        check_pixels(pixels, self.patch_size)
        pixels = to_device(pixels, self.device).float()
        if self.normalize:
            pixels = (pixels - self._mean) / self._std
        return pixels.to(self.dtype)
