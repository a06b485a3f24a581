"""CLIP in tagseg: dense patch embeddings (Stage 2) and the text tower (Stage 3).

:class:`DenseCLIP` embeds every patch with one of the training-free dense CLIP methods of
:mod:`tagseg.backbones.dense_methods` (GEM, the paper's, by default); :class:`GEMDenseCLIP` is the
GEM one with the ``gem_depth`` argument.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import ftfy
import torch
import torch.nn.functional as F
from transformers import (
    AutoTokenizer,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerBase,
)

from tagseg.backbones.base import ImageBackbone, checked_model_config, load_model, to_device
from tagseg.backbones.dense_methods import (
    GEMSettings,
    SlidingWindow,
    dense_method,
    proxy_features_on_grid,
    sliding_window_embeddings,
)
from tagseg.backbones.hub import ModelSource, load_pretrained, source_name
from tagseg.errors import ConfigError

__all__ = ["CLIPTextEncoder", "DenseCLIP", "GEMDenseCLIP", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "clean_clip_text"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DenseCLIPT = TypeVar("DenseCLIPT", bound="DenseCLIP")


def _check_clip_checkpoint(source: ModelSource, tower_type: str) -> None:
    """Raise a clear error unless ``source`` is a full CLIP checkpoint or the wanted tower alone."""
    checked_model_config(source, ("clip", tower_type), "CLIP", "openai/clip-vit-large-patch14")


class DenseCLIP(ImageBackbone):
    """Dense CLIP embeddings: ``(B, 3, H, W)`` pixels in [0, 1] -> ``(B, h, w, dim)``, by a dense method.

    ``method`` names a method of :data:`~tagseg.backbones.dense_methods.DENSE_METHODS` (``gem``,
    ``maskclip``, ``sclip``, ``clearclip``, ``naclip``, ``proxyclip``); ``method_settings`` is its
    settings dataclass, a mapping of its fields, or ``None`` for the official defaults.
    ``sliding_window`` embeds inputs larger than one window window by window. The wrapped model
    itself is not modified.
    """

    default_mean, default_std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        *,
        model_id: str,
        method: str = "gem",
        method_settings: object | Mapping[str, Any] | None = None,
        sliding_window: SlidingWindow | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        normalize: bool = True,
    ) -> None:
        self.method = dense_method(method, method_settings)
        self.method.check_model(len(model.vision_model.encoder.layers))
        super().__init__(
            model, model_id=model_id, patch_size=model.config.patch_size, mean=mean, std=std, normalize=normalize
        )
        self.dim: int = model.config.projection_dim
        if sliding_window is not None:
            sliding_window.check(self.patch_size)
        self.sliding_window = sliding_window
        self._position_cache: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls: type[DenseCLIPT],
        source: ModelSource,
        *,
        device: str | torch.device | None = "cpu",
        normalize: bool = True,
        dtype: str | torch.dtype = torch.float32,
        **options: Any,
    ) -> DenseCLIPT:
        """Load the vision tower of a CLIP checkpoint (e.g. ``openai/clip-vit-large-patch14``, or a directory).

        ``options`` are the constructor's (``method``, ``method_settings``, ``sliding_window``;
        ``gem_depth`` for :class:`GEMDenseCLIP`).
        """
        _check_clip_checkpoint(source, "clip_vision_model")
        model, mean, std = cls._load(CLIPVisionModelWithProjection, source, device=device, dtype=dtype)
        return cls(model, model_id=source_name(source), mean=mean, std=std, normalize=normalize, **options)

    def with_method(
        self,
        method: str,
        method_settings: object | Mapping[str, Any] | None = None,
        sliding_window: SlidingWindow | None = None,
    ) -> DenseCLIP:
        """The same model with another dense method and sliding window (``None``: off), as a new embedder.

        The weights and the position-embedding cache are shared, so switching costs no load: the
        pipeline uses this for per-call ``dense_method`` settings.
        """
        mean, std = self._mean.flatten().tolist(), self._std.flatten().tolist()
        variant = DenseCLIP(
            self.model, model_id=self.model_id, method=method, method_settings=method_settings,
            sliding_window=sliding_window, mean=mean, std=std, normalize=self.normalize,
        )
        variant._position_cache = self._position_cache
        return variant

    @property
    def uses_proxy_features(self) -> bool:
        """Whether the method needs the patch features of another model (``proxy_features``)."""
        return self.method.uses_proxy_features

    def position_embeddings(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Class + patch position embeddings for a patch grid, ``(1, 1 + h * w, width)`` (cached per grid).

        The trained square grid is resampled bicubically with antialiasing; the class token's is kept.
        """
        key = (grid_height, grid_width)
        if key not in self._position_cache:
            trained = self.model.vision_model.embeddings.position_embedding.weight.detach()
            side = int(round((trained.shape[0] - 1) ** 0.5))
            if key == (side, side):
                table = trained
            else:
                grid = trained[1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=key, mode="bicubic", antialias=True, align_corners=False)
                patches = grid.permute(0, 2, 3, 1).reshape(grid_height * grid_width, -1).to(trained.dtype)
                table = torch.cat((trained[:1], patches))
            self._position_cache[key] = table.unsqueeze(0)
        return self._position_cache[key]

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch + class tokens with resampled position embeddings, after the pre-layer-norm."""
        vision = self.model.vision_model
        patches = vision.embeddings.patch_embedding(pixels)
        batch, width, grid_height, grid_width = patches.shape
        tokens = patches.flatten(2).transpose(1, 2)
        class_token = vision.embeddings.class_embedding.to(tokens.dtype).expand(batch, 1, width)
        tokens = torch.cat((class_token, tokens), dim=1) + self.position_embeddings(grid_height, grid_width)
        return vision.pre_layrnorm(tokens)

    def __call__(self, pixels: torch.Tensor, proxy_features: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of every patch, ``(B, H // patch_size, W // patch_size, dim)`` float32, not normalised.

        ``proxy_features`` ``(B, h, w, C)`` are patch features of the same pixels from any
        :class:`~tagseg.interfaces.PatchFeatureExtractor` (DINOv2's of Stage 1), resampled to this
        model's patch grid when the grids differ; methods that do not use them ignore them.
        """
        with torch.inference_mode():
            inputs = self.model_input(pixels)
            batch, _, height, width = inputs.shape
            grid = (height // self.patch_size, width // self.patch_size)
            proxy = None
            if self.uses_proxy_features:
                if proxy_features is None:
                    raise ConfigError(
                        f"the {self.method.name} dense method needs proxy_features: call it with the patch features "
                        "of the same pixels, e.g. embedder(pixels, proxy_features=features(pixels))"
                    )
                proxy = proxy_features_on_grid(proxy_features.to(self.device), grid, batch)
            if self.sliding_window is None:
                return self._embed_window(inputs, proxy)
            return sliding_window_embeddings(self._embed_window, inputs, proxy, self.sliding_window, self.patch_size)

    def _embed_window(self, pixels: torch.Tensor, proxy_features: torch.Tensor | None) -> torch.Tensor:
        """The method's embeddings of normalised ``pixels`` (in the model's dtype), ``(B, h, w, dim)`` float32."""
        batch, _, height, width = pixels.shape
        grid = (height // self.patch_size, width // self.patch_size)
        tokens = self._embed(pixels)
        patches = self.method.patch_tokens(self.model.vision_model.encoder.layers, tokens, grid, proxy_features)
        patches = self.model.visual_projection(self.model.vision_model.post_layernorm(patches))
        return patches.reshape(batch, *grid, self.dim).float()


class GEMDenseCLIP(DenseCLIP):
    """Dense CLIP embeddings through GEM, ``gem_depth`` final blocks (6 in the paper).

    ``gem_depth=0`` means no GEM stream: the plain final tokens of the model, projected for
    every patch (naive dense CLIP).
    """

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        *,
        model_id: str,
        gem_depth: int = 6,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            model, model_id=model_id, method="gem", method_settings=GEMSettings(depth=gem_depth),
            mean=mean, std=std, normalize=normalize,
        )
        self.gem_depth = gem_depth


_WHITESPACE = re.compile(r"\s+")


def clean_clip_text(text: str) -> str:
    """The text cleaning OpenAI's CLIP and open_clip apply before BPE, which Hugging Face's tokenizer skips.

    ftfy repairs mojibake, curly quotes and ligatures ("cafÃ©" -> "café", "dog’s" -> "dog's",
    "ﬁsh" -> "fish"), HTML entities are decoded twice ("Tom &amp;amp; Jerry" -> "Tom & Jerry"),
    whitespace runs become one space. The released caption databases were embedded after this
    cleaning, so texts tagseg embeds itself must be too, to land in the same place.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WHITESPACE.sub(" ", text).strip()


class CLIPTextEncoder:
    """CLIP's text tower: texts -> L2-normalised ``(N, dim)`` float32 CPU embeddings.

    Texts are cleaned as OpenAI's CLIP does (:func:`clean_clip_text`), tokenised once, sorted by
    length and encoded in batches padded to their own
    longest text (not to 77), truncated at the model's maximum length.
    """

    def __init__(
        self,
        model: CLIPTextModelWithProjection,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_id: str,
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size
        self.dim: int = model.config.projection_dim
        self.max_length: int = model.config.max_position_embeddings
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        pad_token_id = tokenizer.pad_token_id
        self._pad_token_id: int = pad_token_id if pad_token_id is not None else model.config.eos_token_id

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSource,
        *,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype = torch.float32,
        batch_size: int = 256,
    ) -> CLIPTextEncoder:
        """Load the text tower and tokenizer of a CLIP checkpoint (Hugging Face id or directory).

        ``dtype`` is a torch dtype or a name (``"auto"``: bfloat16 where the hardware runs it natively).
        """
        _check_clip_checkpoint(source, "clip_text_model")
        model = load_model(CLIPTextModelWithProjection, source, device=device, dtype=dtype)
        tokenizer = load_pretrained(AutoTokenizer, source)
        return cls(model, tokenizer, model_id=source_name(source), batch_size=batch_size)

    def _padded_batch(self, token_ids: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), longest), self._pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(token_ids), longest), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return to_device(input_ids, self.device), to_device(attention_mask, self.device)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings of ``texts``, ``(len(texts), dim)`` float32 on the CPU, in input order."""
        return F.normalize(self.text_embeds(texts), dim=-1)

    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP's projected text embeddings of ``texts`` before normalisation (OpenAI's ``encode_text``),
        ``(len(texts), dim)`` float32 on the CPU, in input order."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        embeddings = torch.empty((len(texts), self.dim), dtype=torch.float32)
        if not texts:
            return embeddings
        cleaned = [clean_clip_text(text) for text in texts]
        token_ids = self.tokenizer(cleaned, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda index: len(token_ids[index]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                input_ids, attention_mask = self._padded_batch([token_ids[row] for row in rows])
                projected = self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
                embeddings[rows] = projected.float().cpu()
        return embeddings
