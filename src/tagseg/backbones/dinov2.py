"""DINOv2 patch features: what Stage 1 clusters into segment candidates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel

from tagseg.errors import ModelNotAvailableError
from tagseg.models import ModelSource, check_pixels, image_normalization, load_pretrained, resolve_device, source_name

__all__ = ["Dinov2Features", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DINOV2_CLASSES: dict[str, type[Dinov2Model] | type[Dinov2WithRegistersModel]] = {
    "dinov2": Dinov2Model,
    "dinov2_with_registers": Dinov2WithRegistersModel,
}


class Dinov2Features:
    """Final-layer-norm patch tokens of a DINOv2 model (with or without registers), as ``(B, h, w, C)``.

    Input pixels are ``(B, 3, H, W)`` RGB in ``[0, 1]`` with ``H`` and ``W`` multiples of
    :attr:`patch_size`; position embeddings are interpolated to any such size. With
    ``normalize=False`` the pixels reach the model unnormalised, as in the reference code.
    """

    def __init__(
        self,
        model: Dinov2Model | Dinov2WithRegistersModel,
        *,
        model_id: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        self.model = model.eval()
        self.model_id = model_id
        self.patch_size: int = model.config.patch_size
        self.dim: int = model.config.hidden_size
        self.normalize = normalize
        self._prefix_tokens = 1 + getattr(model.config, "num_register_tokens", 0)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSource,
        *,
        device: str | torch.device | None = "cpu",
        normalize: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> Dinov2Features:
        """Load a DINOv2 checkpoint (Hugging Face id such as ``facebook/dinov2-base``, or a directory)."""
        name = source_name(source)
        config = load_pretrained(AutoConfig, source)
        model_class = _DINOV2_CLASSES.get(config.model_type)
        if model_class is None:
            raise ModelNotAvailableError(
                f"Model {name!r} is a {config.model_type!r} model, not DINOv2; pass a DINOv2 checkpoint "
                "such as 'facebook/dinov2-base' or a directory that holds one."
            )
        model = load_pretrained(model_class, source, dtype=dtype).to(resolve_device(device))
        mean, std = image_normalization(source, IMAGENET_MEAN, IMAGENET_STD)
        return cls(model, model_id=name, mean=mean, std=std, normalize=normalize)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch features of shape ``(B, H // patch_size, W // patch_size, dim)``, float32."""
        check_pixels(pixels, self.patch_size)
        batch, _, height, width = pixels.shape
        with torch.inference_mode():
            pixels = pixels.to(self.device, torch.float32)
            if self.normalize:
                pixels = (pixels - self._mean) / self._std
            tokens = self.model(pixel_values=pixels.to(self.dtype)).last_hidden_state
            patches = tokens[:, self._prefix_tokens :]
            grid = (batch, height // self.patch_size, width // self.patch_size, self.dim)
            return patches.reshape(grid).float()
