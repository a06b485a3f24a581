"""Training-free dense CLIP methods: how the last block(s) of a CLIP image tower become per-patch embeddings.

Every method runs the unmodified blocks of a Hugging Face CLIP vision tower up to its last
block(s) and replaces only what happens there, so its patch embeddings stay in the joint space of
CLIP's text tower. A method takes the tokens after the tower's pre-layer-norm, ``(B, 1 + h * w,
width)`` with the class token first, and returns the patch tokens before the post-layer-norm,
``(B, h * w, width)``; :class:`tagseg.backbones.clip.DenseCLIP` adds the embedding and the projection.

Registered by name (:data:`~tagseg.dense_registry.DENSE_METHODS`, :func:`dense_method`), each with one frozen settings
dataclass (in :mod:`tagseg.dense_registry`, which imports no torch) whose defaults are the hyper-parameters of the method's official code:

- ``gem`` (:class:`GEMSettings`): a parallel self-self attention stream through the last 6 blocks;
- ``maskclip`` (:class:`MaskCLIPSettings`): the last attention replaced by the identity;
- ``sclip`` (:class:`SCLIPSettings`): ``softmax(q q^T) + softmax(k k^T)`` (correlative self-attention);
- ``clearclip`` (:class:`ClearCLIPSettings`): ``softmax(q q^T)``, no residual, no feed-forward network;
- ``naclip`` (:class:`NACLIPSettings`): ``softmax(k k^T + Gaussian neighbourhood)``, no residual, no FFN;
- ``proxyclip`` (:class:`ProxyCLIPSettings`): attention from the patch features of another model (DINOv2).

In the formulas, ``q, k, v`` are the last block's own per-head projections of its first layer norm,
scores are scaled by ``head_dim ** -0.5`` unless said otherwise, and the attended values go through
the block's output projection. All methods share tagseg's position-embedding resampling (bicubic,
antialiased; :meth:`tagseg.backbones.clip.DenseCLIP.position_embeddings`), where the official code of
each resamples bicubically without antialiasing. Post-processing of class logits in the official
code (PAMR, MaskCLIP's key smoothing and prompt denoising, probability thresholds) is not part of
the embeddings and is left out.

:class:`SlidingWindow` and :func:`sliding_window_embeddings` give every method the sliding-window
inference of these methods' evaluations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer

from tagseg.dense_registry import (
    DENSE_METHODS,
    ClearCLIPSettings,
    GEMSettings,
    MaskCLIPSettings,
    NACLIPSettings,
    ProxyCLIPSettings,
    SCLIPSettings,
    SlidingWindow,
    dense_method_settings,
)
from tagseg.errors import ConfigError

__all__ = [
    "DENSE_METHODS",
    "ClearCLIPSettings",
    "DenseMethod",
    "GEMSettings",
    "MaskCLIPSettings",
    "NACLIPSettings",
    "ProxyCLIPSettings",
    "SCLIPSettings",
    "SlidingWindow",
    "dense_method",
    "dense_method_settings",
    "gem_self_self_attention",
    "neighbourhood_bias",
    "proxy_features_on_grid",
    "register_dense_method",
    "sliding_window_embeddings",
    "window_starts",
]

Grid = tuple[int, int]
SettingsT = TypeVar("SettingsT")
MethodT = TypeVar("MethodT", bound="type[DenseMethod[Any]]")


class FinalBlockSettings(Protocol):
    """What every :class:`FinalBlockMethod`'s settings hold."""

    @property
    def keep_residual(self) -> bool: ...

    @property
    def keep_mlp(self) -> bool: ...


FinalSettingsT = TypeVar("FinalSettingsT", bound=FinalBlockSettings)


# Shared pieces of a block


def _project_heads(attention: CLIPAttention, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The block's queries, keys and values of ``normed`` ``(B, N, width)``, each ``(B, heads, N, head_dim)``."""
    batch, tokens, _ = normed.shape
    shape = (batch, tokens, attention.num_heads, attention.head_dim)
    queries = attention.q_proj(normed).view(shape).transpose(1, 2)
    keys = attention.k_proj(normed).view(shape).transpose(1, 2)
    values = attention.v_proj(normed).view(shape).transpose(1, 2)
    return queries, keys, values


def _merge_heads(attention: CLIPAttention, attended: torch.Tensor) -> torch.Tensor:
    """Heads ``(B, heads, N, head_dim)`` merged and passed through the block's output projection."""
    batch, _, tokens, _ = attended.shape
    return attention.out_proj(attended.transpose(1, 2).reshape(batch, tokens, -1))


class DenseMethod(ABC, Generic[SettingsT]):
    """One dense CLIP method with its settings: pre-layer-normed tokens -> patch tokens.

    Subclasses set :attr:`name` and :attr:`settings_type` and implement :meth:`patch_tokens`;
    :attr:`uses_proxy_features` says whether the method needs patch features of another model.
    """

    name: ClassVar[str]
    settings_type: ClassVar[type[Any]]
    uses_proxy_features: ClassVar[bool] = False

    def __init__(self, settings: SettingsT | None = None) -> None:
        if settings is None:
            settings = self.settings_type()
        if not isinstance(settings, self.settings_type):
            raise ConfigError(
                f"the {self.name} method takes {self.settings_type.__name__}, got {type(settings).__name__}"
            )
        self.settings: SettingsT = settings

    def check_model(self, num_layers: int) -> None:
        """Raise :class:`ConfigError` when the settings do not fit a tower of ``num_layers`` blocks."""

    @abstractmethod
    def patch_tokens(
        self,
        layers: Sequence[CLIPEncoderLayer],
        tokens: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        """Run the tower's ``layers`` on ``tokens`` ``(B, 1 + h * w, width)``; return ``(B, h * w, width)``.

        ``proxy_features`` is ``(B, h, w, C)`` on the same patch grid for methods that use them, else None.
        """


def register_dense_method(method: MethodT) -> MethodT:
    """Register a :class:`DenseMethod` subclass under its ``name`` (usable as a class decorator); the
    name is then a valid ``dense_method`` setting. The built-in methods are listed in
    :mod:`tagseg.dense_registry`."""
    return DENSE_METHODS.register(method)


def dense_method(name: str, settings: object | Mapping[str, Any] | None = None) -> DenseMethod[Any]:
    """The method registered as ``name``, with ``settings``: its settings dataclass, a mapping of
    that dataclass's fields (e.g. from TOML, see :func:`dense_method_settings`), or ``None`` for the
    official defaults."""
    method = _registered_method(name)
    if isinstance(settings, Mapping):
        settings = dense_method_settings(name, settings)
    return method(settings)


def _registered_method(name: str) -> type[DenseMethod[Any]]:
    if name not in DENSE_METHODS:
        raise ConfigError(f"unknown dense method {name!r}; choose one of {', '.join(DENSE_METHODS)}")
    return DENSE_METHODS[name]


# GEM


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


class GEM(DenseMethod[GEMSettings]):
    """GEM ("Grounding Everything", Bousselham et al. 2024; github.com/WalBouss/GEM).

    A second stream runs through the last ``depth`` blocks. In each, with ``t`` the block's first
    layer norm of the *original* stream and ``q, k, v`` its projections of ``t``:

    1. each ``p`` in ``(q, k, v)`` is refined once by self-self attention,
       ``p1 = softmax(n(p) n(p)^T * tau) n(p)`` with ``n`` the per-head L2 normalisation and
       ``tau = mean_tokens(||t||) * head_dim ** -0.5`` (per image);
    2. ``a_p = softmax(n(p1) n(p1)^T * tau)`` gives the path's value ``a_p v``;
    3. the three values are averaged, heads merged, passed through the block's output projection
       and added to the GEM stream (no MLP, no second layer norm).

    Both self-self steps are scaled dot-product attention (queries pre-multiplied by ``tau``), so
    they run on :func:`torch.nn.functional.scaled_dot_product_attention`, the three paths batched.
    One refinement iteration and the automatic temperature are the official defaults
    (``ss_attn_iter=1``, ``ss_attn_temp=None``) and are fixed here.
    """

    name = "gem"
    settings_type = GEMSettings

    def check_model(self, num_layers: int) -> None:
        if self.settings.depth > num_layers:
            raise ConfigError(
                f"gem_depth must be between 0 and {num_layers} (the model's blocks), got {self.settings.depth}"
            )

    @staticmethod
    def _block(
        layer: CLIPEncoderLayer, original: torch.Tensor, gem: torch.Tensor, *, advance_original: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block on both streams; the original one is advanced only when a later block needs it."""
        attention = layer.self_attn
        normed = layer.layer_norm1(original)
        queries, keys, values = _project_heads(attention, normed)
        inverse_temperature = normed.norm(dim=-1).mean(dim=1) * attention.scale
        gem = gem + _merge_heads(attention, gem_self_self_attention(queries, keys, values, inverse_temperature))
        if advance_original:
            attended = F.scaled_dot_product_attention(queries, keys, values, scale=attention.scale)
            original = original + _merge_heads(attention, attended)
            original = original + layer.mlp(layer.layer_norm2(original))
        return original, gem

    def patch_tokens(
        self,
        layers: Sequence[CLIPEncoderLayer],
        tokens: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        first_gem = len(layers) - self.settings.depth
        for layer in layers[:first_gem]:
            tokens = layer(tokens, None)
        gem = tokens
        for index, layer in enumerate(layers[first_gem:], start=first_gem):
            tokens, gem = self._block(layer, tokens, gem, advance_original=index < len(layers) - 1)
        return gem[:, 1:]


# Methods that replace the attention of the last block only


class FinalBlockMethod(DenseMethod[FinalSettingsT]):
    """A method that runs every block but the last unchanged and replaces the last one's attention.

    The last block computes ``y = out_proj(attend(q, k, v))`` for the patch tokens (the class token
    still takes part as a key), then ``y += x`` when ``keep_residual`` and ``y += mlp(ln_2(y))``
    when ``keep_mlp`` (``x`` the block's input).
    """

    def patch_tokens(
        self,
        layers: Sequence[CLIPEncoderLayer],
        tokens: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        for layer in layers[:-1]:
            tokens = layer(tokens, None)
        last = layers[-1]
        queries, keys, values = _project_heads(last.self_attn, last.layer_norm1(tokens))
        patches = _merge_heads(last.self_attn, self.attend(queries, keys, values, grid, proxy_features))
        if self.settings.keep_residual:
            patches = patches + tokens[:, 1:]
        if self.settings.keep_mlp:
            patches = patches + last.mlp(last.layer_norm2(patches))
        return patches

    @abstractmethod
    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attended values of the patch tokens, ``(B, heads, h * w, head_dim)``; inputs have the class token first."""


class MaskCLIP(FinalBlockMethod[MaskCLIPSettings]):
    """MaskCLIP (Zhou, Loy and Dai, ECCV 2022; github.com/chongzhou96/MaskCLIP).

    The last block's attention is dropped: each patch keeps its own value, ``y = out_proj(v)``.
    Paper vs code: the paper describes value embedding -> output projection -> CLIP projection;
    the official ViT backbone (``return_qkv`` of its last layer) also adds the block input and
    runs the feed-forward network on that value path. The code is followed
    (:class:`MaskCLIPSettings` defaults).
    """

    name = "maskclip"
    settings_type = MaskCLIPSettings

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        return values[:, :, 1:]


class SCLIP(FinalBlockMethod[SCLIPSettings]):
    """SCLIP (Wang, Mei and Yuille, ECCV 2024; github.com/wangf3014/SCLIP).

    Correlative self-attention in the last block: ``softmax(q q^T s) v + softmax(k k^T s) v``.
    The paper presents CSA with a projection ``W_r`` and reuses the pretrained query and key
    projections for it; the official code sums the two softmaxes (not normalised again) and keeps
    the block's residual connection and feed-forward network, as here.
    """

    name = "sclip"
    settings_type = SCLIPSettings

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        query_query = F.scaled_dot_product_attention(queries[:, :, 1:], queries, values)
        key_key = F.scaled_dot_product_attention(keys[:, :, 1:], keys, values)
        return query_query + key_key


class ClearCLIP(FinalBlockMethod[ClearCLIPSettings]):
    """ClearCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ClearCLIP).

    Three changes to the last block: query-query self-attention ``softmax(q q^T s) v``, no
    residual connection, no feed-forward network. The official code removes the residual and
    the FFN with one switch (``ignore_residual``); here they are two settings.
    """

    name = "clearclip"
    settings_type = ClearCLIPSettings

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        return F.scaled_dot_product_attention(queries[:, :, 1:], queries, values)


def neighbourhood_bias(grid: Grid, std: float) -> torch.Tensor:
    """NACLIP's neighbourhood: ``(1 + h * w, 1 + h * w)`` with ``exp(-|p - p'|^2 / (2 std^2))`` between
    patches ``p, p'`` (grid positions, in patches) and 0 in the class token's row and column."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    positions = torch.stack((rows.flatten(), cols.flatten()), dim=1).float()
    squared = (positions[:, None, :] - positions[None, :, :]).square().sum(dim=-1)
    return F.pad(torch.exp(-squared / (2 * std**2)), (1, 0, 1, 0))


class NACLIP(FinalBlockMethod[NACLIPSettings]):
    """NACLIP (Hajimiri, Ben Ayed and Dolz, WACV 2025; github.com/sinahmr/NACLIP).

    The last block attends by key-key similarity plus a Gaussian neighbourhood on the patch grid,
    ``softmax(k k^T s + omega) v`` (:func:`neighbourhood_bias`), and drops the residual connection
    and the feed-forward network (the official "reduced" architecture). The official code also
    refines the class logits with PAMR (10 steps), which is not part of the embeddings.
    """

    name = "naclip"
    settings_type = NACLIPSettings

    def __init__(self, settings: NACLIPSettings | None = None) -> None:
        super().__init__(settings)
        self._biases: dict[tuple[Grid, torch.device, torch.dtype], torch.Tensor] = {}

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        std = self.settings.gaussian_std
        if std is None:
            return F.scaled_dot_product_attention(keys[:, :, 1:], keys, values)
        key = (grid, keys.device, keys.dtype)
        if key not in self._biases:
            self._biases[key] = neighbourhood_bias(grid, std)[1:].to(device=keys.device, dtype=keys.dtype)
        return F.scaled_dot_product_attention(keys[:, :, 1:], keys, values, attn_mask=self._biases[key])


class ProxyCLIP(FinalBlockMethod[ProxyCLIPSettings]):
    """ProxyCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ProxyCLIP).

    The last block's attention comes from another model's patch features ``f`` (a vision
    foundation model: DINOv2 here, given by the caller): with ``S`` the cosine similarities of
    ``f`` between patches, scores ``gamma * (S - beta * mean(S))``, negative scores masked out,
    softmax over the patches, the same for every head; ``y = out_proj(A v)`` over the patch values,
    without residual connection or feed-forward network.

    Differences from the official code (paper and code agree on the equations): the features are
    resampled bilinearly to CLIP's patch grid (the official code resamples CLIP's values to the
    proxy grid and answers on that grid); ``mean(S)`` is per image (the official code averages over
    the whole batch, the same at its batch size of 1); a patch always keeps its own score, so a
    patch whose every score is negative attends to itself instead of giving NaN.
    """

    name = "proxyclip"
    settings_type = ProxyCLIPSettings
    uses_proxy_features = True

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        grid: Grid,
        proxy_features: torch.Tensor | None,
    ) -> torch.Tensor:
        if proxy_features is None:
            raise ConfigError("the proxyclip method needs proxy_features, the patch features of another model")
        unit = F.normalize(proxy_features.flatten(1, 2).float(), dim=-1)
        similarity = unit @ unit.transpose(1, 2)
        scores = (similarity - self.settings.beta * similarity.mean(dim=(1, 2), keepdim=True)) * self.settings.gamma
        own = torch.eye(scores.shape[-1], dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill((scores < 0) & ~own, float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(values.dtype)
        return weights.unsqueeze(1) @ values[:, :, 1:]


# Proxy features and sliding windows


def proxy_features_on_grid(features: torch.Tensor, grid: Grid, batch: int) -> torch.Tensor:
    """Patch features of any :class:`~tagseg.interfaces.PatchFeatureExtractor`, ``(B, h', w', C)``, on
    the patch grid ``grid`` ``(h, w)``: as they are when the grids agree, else resampled bilinearly."""
    if features.ndim != 4 or features.shape[0] != batch:
        raise ValueError(
            f"proxy features must be (B, h, w, C) for the same {batch} image(s), got {tuple(features.shape)}; "
            "pass the output of a PatchFeatureExtractor for the same pixels"
        )
    if tuple(features.shape[1:3]) == grid:
        return features
    channels_first = features.permute(0, 3, 1, 2).float()
    resampled = F.interpolate(channels_first, size=grid, mode="bilinear", align_corners=False)
    return resampled.permute(0, 2, 3, 1)


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of the windows along one side of ``length``, as :class:`SlidingWindow` lays them out."""
    count = max(length - size + stride - 1, 0) // stride + 1
    return [max(min(index * stride + size, length) - size, 0) for index in range(count)]


def sliding_window_embeddings(
    embed: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    pixels: torch.Tensor,
    proxy_features: torch.Tensor | None,
    window: SlidingWindow,
    patch_size: int,
) -> torch.Tensor:
    """Patch embeddings ``(B, h, w, D)`` of ``pixels`` ``(B, 3, H, W)`` window by window.

    ``embed(pixels, proxy_features)`` embeds one window; proxy features, when given, are on the
    image's patch grid and cropped with each window. Where windows overlap, the embeddings are
    averaged (the official code averages class logits of L2-normalised embeddings per pixel; the
    embeddings here are not normalised, so a window's weight grows with its embedding norms). An
    image that fits in one window is embedded in one call, exactly as without a window.
    """
    height, width = pixels.shape[-2:]
    rows = window_starts(height, window.size, window.stride)
    cols = window_starts(width, window.size, window.stride)
    if len(rows) == len(cols) == 1:
        return embed(pixels, proxy_features)
    window_height, window_width = min(window.size, height), min(window.size, width)
    grid_height, grid_width = window_height // patch_size, window_width // patch_size
    image_grid = (height // patch_size, width // patch_size)
    total: torch.Tensor | None = None
    count = torch.zeros(*image_grid, 1)
    for top in rows:
        for left in cols:
            crop = pixels[:, :, top : top + window_height, left : left + window_width]
            row, col = top // patch_size, left // patch_size
            cells = (slice(row, row + grid_height), slice(col, col + grid_width))
            embedded = embed(crop, None if proxy_features is None else proxy_features[:, cells[0], cells[1]])
            if total is None:
                total = embedded.new_zeros(embedded.shape[0], *image_grid, embedded.shape[-1])
            total[:, cells[0], cells[1]] += embedded
            count[cells] += 1
    assert total is not None
    return total / count.to(total.device)
