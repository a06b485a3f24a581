"""CLIP in tagseg: dense patch embeddings through GEM (Stage 2) and the text tower (Stage 3).

GEM ("Grounding Everything", Bousselham et al. 2024) runs a second, parallel stream through the
last blocks of the CLIP vision transformer. In each such block, with ``t`` the block's first layer
norm of the *original* stream and ``q, k, v`` the block's own projections of ``t``:

1. each ``p`` in ``(q, k, v)`` is refined once by self-self attention,
   ``p1 = softmax(n(p) n(p)^T * tau) n(p)`` with ``n`` the per-head L2 normalisation and
   ``tau = mean_tokens(||t||) * head_dim ** -0.5``;
2. ``a_p = softmax(n(p1) n(p1)^T * tau)`` gives the path's value ``a_p v``;
3. the three values are averaged, heads merged, passed through the block's output projection and
   added to the GEM stream (no MLP, no second layer norm).

Both self-self steps are ordinary scaled dot-product attention (queries pre-multiplied by ``tau``),
so they run on :func:`torch.nn.functional.scaled_dot_product_attention`, the three paths batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import (
    AutoTokenizer,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerBase,
)
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from tagseg.backbones.base import ImageBackbone, checked_model_config, load_model, to_device
from tagseg.backbones.hub import ModelSource, load_pretrained, source_name
from tagseg.errors import ConfigError

__all__ = ["CLIPTextEncoder", "GEMDenseCLIP", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_clip_checkpoint(source: ModelSource, tower_type: str) -> None:
    """Raise a clear error unless ``source`` is a full CLIP checkpoint or the wanted tower alone."""
    checked_model_config(source, ("clip", tower_type), "CLIP", "openai/clip-vit-large-patch14")


def gem_self_self_attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, inverse_temperature: torch.Tensor
) -> torch.Tensor:
    """GEM's attention of one block: the average over ``p`` in (q, k, v) of ``a_p v``.

    ``queries``, ``keys`` and ``values`` are ``(B, heads, N, head_dim)``; ``inverse_temperature``
    is ``(B,)``. Returns ``(B, heads, N, head_dim)``.
    """
    batch, heads, tokens, head_dim = values.shape
    tau = inverse_temperature.view(1, batch, 1, 1, 1)
    paths = F.normalize(torch.stack((queries, keys, values)), dim=-1)
    flat = (3 * batch, heads, tokens, head_dim)
    refined = F.scaled_dot_product_attention(
        (paths * tau).reshape(flat), paths.reshape(flat), paths.reshape(flat), scale=1.0
    ).view(3, batch, heads, tokens, head_dim)
    refined = F.normalize(refined, dim=-1)
    shared_values = values.unsqueeze(0).expand(3, -1, -1, -1, -1).reshape(flat)
    assigned = F.scaled_dot_product_attention(
        (refined * tau).reshape(flat), refined.reshape(flat), shared_values, scale=1.0
    )
    return assigned.view(3, batch, heads, tokens, head_dim).mean(dim=0)


class GEMDenseCLIP(ImageBackbone):
    """Dense CLIP embeddings through GEM: ``(B, 3, H, W)`` pixels in [0, 1] -> ``(B, h, w, dim)``.

    ``gem_depth`` is the number of final blocks that carry the GEM stream (6 in the paper).
    ``gem_depth=0`` means no GEM stream: the plain final tokens of the model, projected for
    every patch (naive dense CLIP). The wrapped model itself is not modified.
    """

    default_mean, default_std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

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
        layers = model.vision_model.encoder.layers
        if not 0 <= gem_depth <= len(layers):
            raise ConfigError(f"gem_depth must be between 0 and {len(layers)} (the model's blocks), got {gem_depth}")
        super().__init__(
            model, model_id=model_id, patch_size=model.config.patch_size, mean=mean, std=std, normalize=normalize
        )
        self.gem_depth = gem_depth
        self.dim: int = model.config.projection_dim
        self._position_cache: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSource,
        *,
        gem_depth: int = 6,
        device: str | torch.device | None = "cpu",
        normalize: bool = True,
        dtype: str | torch.dtype = torch.float32,
    ) -> GEMDenseCLIP:
        """Load the vision tower of a CLIP checkpoint (e.g. ``openai/clip-vit-large-patch14``, or a directory)."""
        _check_clip_checkpoint(source, "clip_vision_model")
        model, mean, std = cls._load(CLIPVisionModelWithProjection, source, device=device, dtype=dtype)
        return cls(model, model_id=source_name(source), gem_depth=gem_depth, mean=mean, std=std, normalize=normalize)

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

    @staticmethod
    def _gem_block(
        layer: CLIPEncoderLayer, original: torch.Tensor, gem: torch.Tensor, *, advance_original: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block on both streams; the original one is advanced only when a later block needs it."""
        attention = layer.self_attn
        batch, tokens, width = original.shape
        normed = layer.layer_norm1(original)
        heads_shape = (batch, tokens, attention.num_heads, attention.head_dim)
        queries = attention.q_proj(normed).view(heads_shape).transpose(1, 2)
        keys = attention.k_proj(normed).view(heads_shape).transpose(1, 2)
        values = attention.v_proj(normed).view(heads_shape).transpose(1, 2)
        inverse_temperature = normed.norm(dim=-1).mean(dim=1) * attention.scale
        gem_values = gem_self_self_attention(queries, keys, values, inverse_temperature)
        gem = gem + attention.out_proj(gem_values.transpose(1, 2).reshape(batch, tokens, width))
        if advance_original:
            attended = F.scaled_dot_product_attention(queries, keys, values, scale=attention.scale)
            original = original + attention.out_proj(attended.transpose(1, 2).reshape(batch, tokens, width))
            original = original + layer.mlp(layer.layer_norm2(original))
        return original, gem

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """GEM embeddings of every patch, ``(B, H // patch_size, W // patch_size, dim)`` float32, not normalised."""
        layers = self.model.vision_model.encoder.layers
        first_gem = len(layers) - self.gem_depth
        with torch.inference_mode():
            inputs = self.model_input(pixels)
            batch, _, height, width = inputs.shape
            original = self._embed(inputs)
            for layer in layers[:first_gem]:
                original = layer(original, None)
            gem = original
            for index, layer in enumerate(layers[first_gem:], start=first_gem):
                original, gem = self._gem_block(layer, original, gem, advance_original=index < len(layers) - 1)
            patches = self.model.visual_projection(self.model.vision_model.post_layernorm(gem[:, 1:]))
            grid = (batch, height // self.patch_size, width // self.patch_size, self.dim)
            return patches.reshape(grid).float()


class CLIPTextEncoder:
    """CLIP's text tower: texts -> L2-normalised ``(N, dim)`` float32 CPU embeddings.

    Texts are tokenised once, sorted by length and encoded in batches padded to their own
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
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        embeddings = torch.empty((len(texts), self.dim), dtype=torch.float32)
        if not texts:
            return embeddings
        token_ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda index: len(token_ids[index]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                input_ids, attention_mask = self._padded_batch([token_ids[row] for row in rows])
                projected = self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
                embeddings[rows] = F.normalize(projected.float(), dim=-1).cpu()
        return embeddings
