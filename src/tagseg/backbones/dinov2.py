"""DINOv2 patch features: what Stage 1 clusters into segment candidates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Dinov2Model, Dinov2WithRegistersModel

from tagseg.backbones.base import ImageBackbone, checked_model_config
from tagseg.backbones.hub import ModelSource, source_name

__all__ = ["Dinov2Features", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DINOV2_CLASSES: dict[str, type[Dinov2Model] | type[Dinov2WithRegistersModel]] = {
    "dinov2": Dinov2Model,
    "dinov2_with_registers": Dinov2WithRegistersModel,
}


class Dinov2Features(ImageBackbone):
    """Final-layer-norm patch tokens of a DINOv2 model (with or without registers), as ``(B, h, w, C)``.

    Input pixels are ``(B, 3, H, W)`` RGB in ``[0, 1]`` with ``H`` and ``W`` multiples of
    :attr:`patch_size`; position embeddings are interpolated to any such size. With
    ``normalize=False`` the pixels reach the model unnormalised, as in the reference code.
    """

    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        model: Dinov2Model | Dinov2WithRegistersModel,
        *,
        model_id: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            model, model_id=model_id, patch_size=model.config.patch_size, mean=mean, std=std, normalize=normalize
        )
        self.dim: int = model.config.hidden_size
        self._prefix_tokens = 1 + getattr(model.config, "num_register_tokens", 0)

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSource,
        *,
        device: str | torch.device | None = "cpu",
        normalize: bool = True,
        dtype: str | torch.dtype = torch.float32,
    ) -> Dinov2Features:
        """Load a DINOv2 checkpoint (Hugging Face id such as ``facebook/dinov2-base``, or a directory)."""
        config = checked_model_config(source, _DINOV2_CLASSES, "DINOv2", "facebook/dinov2-base")
        model, mean, std = cls._load(_DINOV2_CLASSES[config.model_type], source, device=device, dtype=dtype)
        return cls(model, model_id=source_name(source), mean=mean, std=std, normalize=normalize)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch features of shape ``(B, H // patch_size, W // patch_size, dim)``, float32."""
        with torch.inference_mode():
            inputs = self.model_input(pixels)
            batch, _, height, width = inputs.shape
            tokens = self.model(pixel_values=inputs).last_hidden_state
            patches = tokens[:, self._prefix_tokens :]
            grid = (batch, height // self.patch_size, width // self.patch_size, self.dim)
            return patches.reshape(grid).float()
