"""Talk2DINO (Barsellotti et al., ICCV 2025): CLIP text embeddings mapped into DINOv2's patch space.

Both backbones stay frozen; a small learned projection ψ takes CLIP's text embedding (OpenAI's
``encode_text``: the end-of-text token, text projection, not normalised) to DINOv2's final
layer-normed patch tokens, compared by cosine similarity. In tagseg the segment embeddings are
then Stage 1's own DINOv2 patch features (:class:`Talk2DINOEmbedder`, no second image forward) and
the database is embedded by CLIP's text tower followed by ψ (:class:`Talk2DINOTextEncoder`).

A *projection source* is one of (:func:`load_projection`):

* the official ``.pth`` file (``weights/vitb_mlp_infonce.pth``): a state dict with the keys
  ``linear_layer.{weight,bias}`` and ``hidden_layers.<i>.{weight,bias}`` (older files name the
  hidden layer ``linear_layer2``); its CLIP text tower is ViT-B/16, as in every released config;
* a Hugging Face id (``lorebianchi98/Talk2DINO-ViTB``) or a directory in that layout:
  ``model.safetensors`` whose ``proj.``-prefixed keys are the state dict above (the rest, DINOv2 and
  CLIP, is not read), and ``config.json`` whose ``clip_model_name`` names the text tower: an
  OpenAI name (``ViT-B/16``), a Hugging Face id, or a folder inside the directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.backbones.hub import ModelSource, _missing, looks_like_path, model_file, read_model_json, source_name
from tagseg.errors import ConfigError, ModelNotAvailableError

__all__ = [
    "OPENAI_CLIP_IDS",
    "ProjectionCheckpoint",
    "Talk2DINOEmbedder",
    "Talk2DINOProjection",
    "Talk2DINOTextEncoder",
    "load_projection",
]

OPENAI_CLIP_IDS = {
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-L/14": "openai/clip-vit-large-patch14",
}
"""OpenAI CLIP names (Talk2DINO's ``clip_model_name``) -> the same weights on the Hugging Face hub."""

DEFAULT_CLIP_NAME = "ViT-B/16"
"""The text tower of both released projections (``clip_model_name`` of every official config)."""

HUB_WEIGHTS = "model.safetensors"
HUB_PREFIX = "proj."
_LAYOUT = (
    "expected the official Talk2DINO projection: a .pth state dict with 'linear_layer.weight', "
    "'linear_layer.bias' and 'hidden_layers.<i>.weight/bias' (or 'linear_layer2.*'), or a Hugging Face "
    "Talk2DINO folder (config.json, model.safetensors with those keys under 'proj.')"
)
_HIDDEN_KEY = re.compile(r"hidden_layers\.(\d+)\.(weight|bias)")


class Talk2DINOProjection(nn.Module):
    """ψ: CLIP text embedding ``(..., clip_dim)`` -> DINOv2 patch space ``(..., dino_dim)``.

    ψ(t) = W_n tanh(... W_1 tanh(W_0 t + b_0) ... + b_1) + b_n: ``linear_layer`` (W_0, clip_dim -> dino_dim)
    then, for each of the ``hidden_layers`` (dino_dim -> dino_dim), tanh and the layer; the released
    checkpoints have one hidden layer (``act: tanh``, ``hidden_layer: True``).
    """

    def __init__(self, clip_dim: int, dino_dim: int, hidden_layers: int = 1) -> None:
        super().__init__()
        self.clip_dim, self.dino_dim = clip_dim, dino_dim
        self.linear_layer = nn.Linear(clip_dim, dino_dim)
        self.hidden_layers = nn.ModuleList(nn.Linear(dino_dim, dino_dim) for _ in range(hidden_layers))

    def forward(self, text_embeds: torch.Tensor) -> torch.Tensor:
        projected = self.linear_layer(text_embeds)
        for layer in self.hidden_layers:
            projected = layer(torch.tanh(projected))
        return projected

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], name: str) -> Talk2DINOProjection:
        """The projection with the official keys of ``state``; a :class:`ModelNotAvailableError` for any other layout."""
        old_name = "linear_layer2."  # the one hidden layer of older checkpoints
        state = {key.replace(old_name, "hidden_layers.0.", 1) if key.startswith(old_name) else key: value
                 for key, value in state.items()}
        hidden = sorted({int(match.group(1)) for key in state if (match := _HIDDEN_KEY.fullmatch(key))})
        expected = {"linear_layer.weight", "linear_layer.bias"}
        expected |= {f"hidden_layers.{i}.{part}" for i in range(len(hidden)) for part in ("weight", "bias")}
        weight = state.get("linear_layer.weight")
        if set(state) != expected or not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            found = ", ".join(sorted(state)[:6]) or "no tensors"
            raise _missing(name, f"it is not a Talk2DINO projection ({_LAYOUT}; found {found})")
        projection = cls(clip_dim=weight.shape[1], dino_dim=weight.shape[0], hidden_layers=len(hidden))
        try:
            projection.load_state_dict({key: value.float() for key, value in state.items()})
        except RuntimeError as error:
            raise _missing(name, f"its projection weights have unexpected shapes ({str(error).splitlines()[-1].strip()})") from None
        return projection.eval().requires_grad_(False)


@dataclass(frozen=True)
class ProjectionCheckpoint:
    """A loaded projection and the CLIP text tower it was trained with (Hugging Face id or directory)."""

    projection: Talk2DINOProjection
    clip_text: str


def load_projection(source: ModelSource) -> ProjectionCheckpoint:
    """Read a projection source (see the module docstring): the official ``.pth`` or a Talk2DINO folder/hub id."""
    name = source_name(source)
    if name.endswith((".pth", ".pt")):
        path = Path(name).expanduser()
        if not path.is_file():
            raise _missing(name, "no such file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for a file that is not a state dict
            raise _missing(name, f"it cannot be read as a state dict ({type(error).__name__}); {_LAYOUT}") from None
        if not isinstance(state, Mapping):
            raise _missing(name, f"it holds a {type(state).__name__}, not a state dict; {_LAYOUT}")
        return ProjectionCheckpoint(Talk2DINOProjection.from_state_dict(state, name), OPENAI_CLIP_IDS[DEFAULT_CLIP_NAME])
    config = read_model_json(source, "config.json")
    weights = model_file(source, HUB_WEIGHTS)
    if config is None or weights is None:
        where = "in the directory" if looks_like_path(name) else "in the local cache (nor on the hub, where reachable)"
        raise _missing(name, f"no config.json and {HUB_WEIGHTS} found {where}; {_LAYOUT}")
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as reader:
        state = {key[len(HUB_PREFIX):]: reader.get_tensor(key) for key in reader.keys() if key.startswith(HUB_PREFIX)}
    projection = Talk2DINOProjection.from_state_dict(state, name)
    return ProjectionCheckpoint(projection, _clip_text_source(name, config.get("clip_model_name", DEFAULT_CLIP_NAME)))


def _clip_text_source(projection_name: str, clip_name: str) -> str:
    """The CLIP text tower a Talk2DINO folder names: OpenAI names mapped to the hub, folders inside a local one."""
    if clip_name in OPENAI_CLIP_IDS:
        return OPENAI_CLIP_IDS[clip_name]
    if looks_like_path(projection_name) and not os.path.isabs(clip_name):
        inside = Path(projection_name).expanduser() / clip_name
        if inside.is_dir():
            return str(inside)
    return clip_name


class Talk2DINOTextEncoder:
    """Texts -> CLIP text embeddings -> ψ -> L2-normalised ``(N, dino_dim)`` float32 CPU embeddings.

    The CLIP tower runs on its device and dtype; ψ runs in float32 on the CPU (under 1.6 M weights).
    """

    def __init__(self, clip: CLIPTextEncoder, projection: Talk2DINOProjection, *, model_id: str) -> None:
        if clip.dim != projection.clip_dim:
            raise ModelNotAvailableError(
                f"Talk2DINO {model_id!r}: the projection takes {projection.clip_dim}-d CLIP text embeddings, but "
                f"the text tower {clip.model_id!r} gives {clip.dim}-d ones; set clip_model_name to the tower it was trained with."
            )
        self.clip = clip
        self.projection = projection
        self.model_id = model_id
        self.dim: int = projection.dino_dim

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSource,
        *,
        model_id: str | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype = torch.float32,
    ) -> Talk2DINOTextEncoder:
        """Load a projection source and the CLIP text tower it names (through tagseg's loader)."""
        checkpoint = load_projection(source)
        clip = CLIPTextEncoder.from_pretrained(checkpoint.clip_text, device=device, dtype=dtype)
        return cls(clip, checkpoint.projection, model_id=model_id or source_name(source))

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised ψ(CLIP text embedding) of ``texts``, ``(len(texts), dim)`` float32 on the CPU."""
        with torch.inference_mode():
            return F.normalize(self.projection(self.clip.text_embeds(texts)), dim=-1)


class Talk2DINOEmbedder:
    """Stage 2 of Talk2DINO: Stage 1's DINOv2 patch features themselves, L2-normalised per patch.

    ``uses_proxy_features`` is true: the pipeline hands it the patch features of the same forward,
    so an image costs one DINOv2 forward. Normalising each patch makes a segment's pooled embedding
    point along the mean of its patches' unit vectors: its dot product with a text is the mean of
    the patches' cosine similarities (the official per-patch score), divided by the pooled norm.
    """

    uses_proxy_features = True

    def __init__(self, dim: int, *, model_id: str, patch_size: int = 14) -> None:
        self.dim = dim
        self.model_id = model_id
        self.patch_size = patch_size

    @classmethod
    def from_pretrained(cls, source: ModelSource, *, model_id: str | None = None) -> Talk2DINOEmbedder:
        """The embedder for a projection source (its DINOv2 width is the projection's output size)."""
        return cls(load_projection(source).projection.dino_dim, model_id=model_id or source_name(source))

    def __call__(self, pixels: torch.Tensor, proxy_features: torch.Tensor | None = None) -> torch.Tensor:
        """``proxy_features`` ``(B, h, w, dim)`` normalised per patch, float32 (``pixels`` are not read)."""
        if proxy_features is None:
            raise ConfigError(
                "Talk2DINO embeds with the DINOv2 patch features of Stage 1: call it as "
                "embedder(pixels, proxy_features=features(pixels))"
            )
        if proxy_features.shape[-1] != self.dim:
            raise ConfigError(
                f"Talk2DINO {self.model_id!r} maps texts to {self.dim}-d DINOv2 patches, but the patch features are "
                f"{proxy_features.shape[-1]}-d; set feature_model to the DINOv2 it was trained with "
                "(facebook/dinov2-with-registers-base for ViT-B, -large for ViT-L)."
            )
        return F.normalize(proxy_features.float(), dim=-1)
