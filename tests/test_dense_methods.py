"""The dense CLIP methods against their equations, on a tiny random CLIP.

Each method is recomputed here from its paper's equations with every block written by hand from
the checkpoint's weights (patch embedding as a matrix product, layer norms, projections, explicit
softmax, quick-GELU MLP): no transformers forward and no tagseg code. For each method a variant
without its defining step is computed the same way and shown to differ from the method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModelWithProjection

from tagseg.backbones import dense_methods
from tagseg.backbones.dense_methods import (
    DENSE_METHODS,
    FinalBlockMethod,
    GEMSettings,
    NACLIPSettings,
    ProxyCLIPSettings,
    SlidingWindow,
    dense_method,
    register_dense_method,
    window_starts,
)
from tagseg.backbones.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, DenseCLIP, GEMDenseCLIP
from tagseg.config import preset
from tagseg.errors import ConfigError
from tagseg.backbones.dinov2 import Dinov2Features
from tagseg.interfaces import DenseImageEmbedder, PatchFeatureExtractor
from tagseg.testing import save_random_clip, save_random_dinov2
from tagseg.toy import ToyPatchFeatures

PATCH, DIM = 16, 24
SIZES = [(224, 224), (160, 224)]  # the trained grid, and a non-square one (resampled positions)
TOLERANCE = 1e-4
METHODS = ("gem", "maskclip", "sclip", "clearclip", "naclip", "proxyclip")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def hand(clip_dir: Path) -> HandCLIP:
    return HandCLIP(CLIPVisionModelWithProjection.from_pretrained(clip_dir))


def _pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _proxy(batch: int, height: int, width: int, channels: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


def _max_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    return (first - second).abs().max().item()


# The tower by hand


def softmax(scores: torch.Tensor) -> torch.Tensor:
    exponentials = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=-1, keepdim=True)


class HandCLIP:
    """CLIP's vision tower written out from its weights, one equation per line."""

    def __init__(self, model: CLIPVisionModelWithProjection) -> None:
        self.weights = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
        self.heads = model.config.num_attention_heads
        self.head_dim = model.config.hidden_size // self.heads
        self.num_layers = model.config.num_hidden_layers
        self.eps = model.config.layer_norm_eps

    def _layer(self, index: int, name: str) -> str:
        return f"vision_model.encoder.layers.{index}.{name}"

    def layer_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        variance = (x - mean).square().mean(dim=-1, keepdim=True)
        scale, shift = self.weights[f"{prefix}.weight"], self.weights[f"{prefix}.bias"]
        return (x - mean) / torch.sqrt(variance + self.eps) * scale + shift

    def linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return x @ self.weights[f"{prefix}.weight"].T + self.weights[f"{prefix}.bias"]

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class + patch tokens after the pre-layer-norm; positions resampled bicubically (antialiased)."""
        batch, channels, height, width = pixels.shape
        grid = (height // PATCH, width // PATCH)
        patches = pixels.reshape(batch, channels, grid[0], PATCH, grid[1], PATCH).permute(0, 2, 4, 1, 3, 5)
        kernel = self.weights["vision_model.embeddings.patch_embedding.weight"]
        patch_tokens = patches.reshape(batch, grid[0] * grid[1], -1) @ kernel.reshape(kernel.shape[0], -1).T
        table = self.weights["vision_model.embeddings.position_embedding.weight"]
        side = math.isqrt(table.shape[0] - 1)
        positions = table[1:]
        if grid != (side, side):
            square = table[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
            resampled = F.interpolate(square, size=grid, mode="bicubic", antialias=True)[0]
            positions = resampled.permute(1, 2, 0).reshape(-1, table.shape[1])
        class_token = self.weights["vision_model.embeddings.class_embedding"] + table[0]
        tokens = torch.cat((class_token.expand(batch, 1, -1), patch_tokens + positions), dim=1)
        return self.layer_norm(tokens, "vision_model.pre_layrnorm")

    def projections(self, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The block's first layer norm ``t`` and its per-head q, k, v ``(B, heads, N, head_dim)``."""
        t = self.layer_norm(x, self._layer(index, "layer_norm1"))
        split = [
            self.linear(t, self._layer(index, f"self_attn.{name}_proj"))
            .reshape(*t.shape[:2], self.heads, self.head_dim)
            .transpose(1, 2)
            for name in ("q", "k", "v")
        ]
        return t, *split

    def output(self, attended: torch.Tensor, index: int) -> torch.Tensor:
        merged = attended.transpose(1, 2).reshape(attended.shape[0], attended.shape[2], -1)
        return self.linear(merged, self._layer(index, "self_attn.out_proj"))

    def mlp(self, x: torch.Tensor, index: int) -> torch.Tensor:
        hidden = self.linear(self.layer_norm(x, self._layer(index, "layer_norm2")), self._layer(index, "mlp.fc1"))
        return self.linear(hidden * torch.sigmoid(1.702 * hidden), self._layer(index, "mlp.fc2"))

    def block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        _, q, k, v = self.projections(x, index)
        x = x + self.output(softmax(q @ k.transpose(-1, -2) * self.head_dim**-0.5) @ v, index)
        return x + self.mlp(x, index)

    def embeddings(self, patch_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        normed = self.layer_norm(patch_tokens, "vision_model.post_layernorm")
        projected = normed @ self.weights["visual_projection.weight"].T
        return projected.reshape(patch_tokens.shape[0], *grid, -1)


def normalized(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)


# The methods' equations

Reference = Callable[[HandCLIP, torch.Tensor, torch.Tensor | None], torch.Tensor]
Weights = Callable[[torch.Tensor, torch.Tensor, tuple[int, int], torch.Tensor | None], torch.Tensor]


def gem(depth: int) -> Reference:
    """GEM: self-self attention of q, k and v, refined once, in a parallel stream over the last ``depth`` blocks."""

    def compute(hand: HandCLIP, pixels: torch.Tensor, proxy: torch.Tensor | None) -> torch.Tensor:
        x = hand.tokens(pixels)
        first = hand.num_layers - depth
        for index in range(first):
            x = hand.block(x, index)
        stream = x
        for index in range(first, hand.num_layers):
            t, q, k, v = hand.projections(x, index)
            tau = t.norm(dim=-1).mean(dim=1).view(-1, 1, 1, 1) * hand.head_dim**-0.5
            total = torch.zeros_like(v)
            for p in (q, k, v):
                p1 = unit(softmax(unit(p) @ unit(p).transpose(-1, -2) * tau) @ unit(p))
                total = total + softmax(unit(p1) @ unit(p1).transpose(-1, -2) * tau) @ v
            stream = stream + hand.output(total / 3, index)
            x = hand.block(x, index)
        return hand.embeddings(stream[:, 1:], (pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH))

    return compute


def final_block(weights: Weights, keep_residual: bool, keep_mlp: bool) -> Reference:
    """Every block but the last as trained; in the last, ``y = out_proj(W v)`` for the patch rows of ``W``."""

    def compute(hand: HandCLIP, pixels: torch.Tensor, proxy: torch.Tensor | None) -> torch.Tensor:
        grid = (pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH)
        x = hand.tokens(pixels)
        last = hand.num_layers - 1
        for index in range(last):
            x = hand.block(x, index)
        _, q, k, v = hand.projections(x, last)
        y = hand.output(weights(q, k, grid, proxy) @ v, last)
        if keep_residual:
            y = y + x[:, 1:]
        if keep_mlp:
            y = y + hand.mlp(y, last)
        return hand.embeddings(y, grid)

    return compute


def scaled(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Scores of the patch rows of ``first`` against every token of ``second``, times ``head_dim ** -0.5``."""
    return first[:, :, 1:] @ second.transpose(-1, -2) * first.shape[-1] ** -0.5


def clip_attention(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
    return softmax(scaled(q, k))


def identity(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
    patches = q.shape[2] - 1
    return F.pad(torch.eye(patches), (1, 0)).expand(q.shape[0], q.shape[1], patches, patches + 1)


def correlative(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
    return softmax(scaled(q, q)) + softmax(scaled(k, k))


def query_query(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
    return softmax(scaled(q, q))


def key_key(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
    return softmax(scaled(k, k))


def neighbourhood(std: float) -> Weights:
    """NACLIP: key-key scores plus ``exp(-d^2 / (2 std^2))`` for patches ``d`` apart (0 for the class token)."""

    def weights(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
        cells = [(row, col) for row in range(grid[0]) for col in range(grid[1])]
        omega = torch.tensor(
            [[0.0] + [math.exp(-((r - r2) ** 2 + (c - c2) ** 2) / (2 * std**2)) for r2, c2 in cells] for r, c in cells]
        )
        return softmax(scaled(k, k) + omega)

    return weights


def proxy_attention(beta: float, gamma: float) -> Weights:
    """ProxyCLIP: cosine similarities ``S`` of the proxy features, ``gamma (S - beta mean S)``, negatives masked
    except a patch's own score (tagseg's rule where the official code would divide 0 by 0)."""

    def weights(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], proxy: torch.Tensor | None) -> torch.Tensor:
        assert proxy is not None
        features = unit(proxy.reshape(proxy.shape[0], -1, proxy.shape[-1]))
        similarity = features @ features.transpose(-1, -2)
        scores = gamma * (similarity - beta * similarity.mean(dim=(1, 2), keepdim=True))
        own = torch.eye(scores.shape[-1], dtype=torch.bool)
        attention = softmax(scores.masked_fill((scores < 0) & ~own, float("-inf")))
        return F.pad(attention, (1, 0)).unsqueeze(1).expand(-1, q.shape[1], -1, -1)

    return weights


# Each method: (settings, the method's equations, a variant without its defining step)
METHOD_EQUATIONS: dict[str, tuple[Reference, Reference]] = {
    "gem": (gem(6), gem(0)),  # without the self-self stream: plain CLIP
    "maskclip": (final_block(identity, True, True), final_block(clip_attention, True, True)),
    "sclip": (final_block(correlative, True, True), final_block(clip_attention, True, True)),
    "clearclip": (final_block(query_query, False, False), final_block(query_query, True, False)),  # residual kept
    "naclip": (final_block(neighbourhood(5.0), False, False), final_block(key_key, False, False)),  # no kernel
    "proxyclip": (final_block(proxy_attention(1.2, 3.0), False, False), final_block(clip_attention, False, False)),
}


def _embed(
    clip_dir: Path, method: str, pixels: torch.Tensor, proxy: torch.Tensor | None, **options: object
) -> torch.Tensor:
    return DenseCLIP.from_pretrained(clip_dir, method=method, **options)(pixels, proxy_features=proxy)


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_method_matches_its_equations_and_not_the_variant_without_its_defining_step(
    clip_dir: Path, hand: HandCLIP, method: str, height: int, width: int
) -> None:
    pixels = _pixels(2, height, width)  # two different images: per-image statistics (GEM, ProxyCLIP)
    proxy = _proxy(2, height // PATCH, width // PATCH)
    output = _embed(clip_dir, method, pixels, proxy)
    equations, variant = METHOD_EQUATIONS[method]
    assert output.shape == (2, height // PATCH, width // PATCH, DIM) and output.dtype == torch.float32
    assert _max_difference(output, equations(hand, normalized(pixels), proxy)) <= TOLERANCE
    assert _max_difference(output, variant(hand, normalized(pixels), proxy)) > 100 * TOLERANCE


@pytest.mark.parametrize(
    ("method", "settings", "equations"),
    [
        ("gem", {"depth": 2}, gem(2)),
        ("maskclip", {"keep_residual": False, "keep_mlp": False}, final_block(identity, False, False)),
        ("sclip", {"keep_residual": False, "keep_mlp": False}, final_block(correlative, False, False)),
        ("clearclip", {"keep_residual": True}, final_block(query_query, True, False)),
        ("clearclip", {"keep_residual": True, "keep_mlp": True}, final_block(query_query, True, True)),
        ("naclip", {"gaussian_std": None}, final_block(key_key, False, False)),
        ("naclip", {"gaussian_std": 2.0, "keep_mlp": True}, final_block(neighbourhood(2.0), False, True)),
        ("proxyclip", {"beta": 0.5, "gamma": 6.0}, final_block(proxy_attention(0.5, 6.0), False, False)),
    ],
)
def test_settings_override_the_official_defaults(
    clip_dir: Path, hand: HandCLIP, method: str, settings: dict[str, object], equations: Reference
) -> None:
    pixels = _pixels(2, 160, 224, seed=3)
    proxy = _proxy(2, 10, 14, seed=4)
    as_mapping = _embed(clip_dir, method, pixels, proxy, method_settings=settings)
    dataclass = DENSE_METHODS[method].settings_type(**settings)
    as_dataclass = _embed(clip_dir, method, pixels, proxy, method_settings=dataclass)
    assert torch.equal(as_mapping, as_dataclass)
    assert _max_difference(as_mapping, equations(hand, normalized(pixels), proxy)) <= TOLERANCE


def test_gem_dense_clip_is_dense_clip_with_gem(clip_dir: Path) -> None:
    pixels = _pixels(1, 160, 224)
    for depth in (6, 3, 0):
        legacy = GEMDenseCLIP.from_pretrained(clip_dir, gem_depth=depth)
        general = DenseCLIP.from_pretrained(clip_dir, method="gem", method_settings=GEMSettings(depth=depth))
        assert legacy.gem_depth == depth and isinstance(legacy, DenseImageEmbedder)
        assert torch.equal(legacy(pixels), general(pixels))
    assert torch.equal(DenseCLIP.from_pretrained(clip_dir)(pixels), GEMDenseCLIP.from_pretrained(clip_dir)(pixels))


# Proxy features from real extractors


@pytest.mark.parametrize("extractor", ["toy", "dinov2"])
def test_proxyclip_takes_any_patch_feature_extractor_on_another_grid(
    clip_dir: Path, hand: HandCLIP, tmp_path: Path, extractor: str
) -> None:
    if extractor == "toy":
        features: PatchFeatureExtractor = ToyPatchFeatures()
    else:
        features = Dinov2Features.from_pretrained(save_random_dinov2(tmp_path))
    pixels = _pixels(1, 224, 224, seed=5)
    proxy = features(pixels)  # toy: 28x28 patches of 8; DINOv2: 16x16 patches of 14; CLIP: 14x14
    assert proxy.shape[1:3] != (14, 14)
    output = DenseCLIP.from_pretrained(clip_dir, method="proxyclip")(pixels, proxy_features=proxy)
    on_clip_grid = F.interpolate(proxy.permute(0, 3, 1, 2), size=(14, 14), mode="bilinear").permute(0, 2, 3, 1)
    equations, _ = METHOD_EQUATIONS["proxyclip"]
    assert _max_difference(output, equations(hand, normalized(pixels), on_clip_grid)) <= TOLERANCE
    if extractor == "toy":  # non-negative colour features: every score is negative, each patch keeps only itself
        own_values = {"keep_residual": False, "keep_mlp": False}
        torch.testing.assert_close(output, _embed(clip_dir, "maskclip", pixels, None, method_settings=own_values))


def test_proxyclip_needs_proxy_features_and_others_ignore_them(clip_dir: Path) -> None:
    pixels = _pixels(1, 64, 96)
    proxyclip = DenseCLIP.from_pretrained(clip_dir, method="proxyclip")
    assert proxyclip.uses_proxy_features
    with pytest.raises(ConfigError, match="proxy_features"):
        proxyclip(pixels)
    with pytest.raises(ValueError, match="same 1 image"):
        proxyclip(pixels, proxy_features=_proxy(2, 4, 6))
    naclip = DenseCLIP.from_pretrained(clip_dir, method="naclip")
    assert not naclip.uses_proxy_features
    assert torch.equal(naclip(pixels), naclip(pixels, proxy_features=_proxy(1, 4, 6)))


# Sliding windows


def test_window_layout_follows_the_official_slide_inference() -> None:
    assert window_starts(448, 224, 112) == [0, 112, 224]
    assert window_starts(320, 224, 112) == [0, 96]  # the last window flush with the end
    assert window_starts(160, 224, 112) == [0]  # a side shorter than the window is taken whole
    assert window_starts(448, 448, 224) == [0]


@pytest.mark.parametrize("method", METHODS)
def test_a_window_covering_the_image_is_the_plain_forward(clip_dir: Path, method: str) -> None:
    pixels = _pixels(1, 320, 288, seed=6)  # larger than the trained 224
    proxy = _proxy(1, 20, 18)
    windowed = _embed(clip_dir, method, pixels, proxy, sliding_window=SlidingWindow(size=320, stride=160))
    assert torch.equal(windowed, _embed(clip_dir, method, pixels, proxy))


@pytest.mark.parametrize("method", METHODS)
def test_overlapping_windows_average_the_embeddings_of_each_window(clip_dir: Path, method: str) -> None:
    pixels = _pixels(1, 288, 256, seed=7)
    proxy = _proxy(1, 18, 16)
    plain = DenseCLIP.from_pretrained(clip_dir, method=method)
    windowed = _embed(clip_dir, method, pixels, proxy, sliding_window=SlidingWindow(size=224, stride=64))
    total, count = torch.zeros(1, 18, 16, DIM), torch.zeros(18, 16, 1)
    for top in (0, 64):
        for left in (0, 32):
            row, col = top // PATCH, left // PATCH
            crop = pixels[:, :, top : top + 224, left : left + 224]
            crop_proxy = proxy[:, row : row + 14, col : col + 14]
            total[:, row : row + 14, col : col + 14] += plain(crop, proxy_features=crop_proxy)
            count[row : row + 14, col : col + 14] += 1
    assert windowed.shape == (1, 18, 16, DIM)
    assert _max_difference(windowed, total / count) <= TOLERANCE
    # the top-left patches lie in the first window only: that window's embeddings exactly
    first_window = plain(pixels[:, :, :224, :224], proxy_features=proxy[:, :14, :14])
    torch.testing.assert_close(windowed[:, :4, :2], first_window[:, :4, :2])
    assert _max_difference(windowed, plain(pixels, proxy_features=proxy)) > 100 * TOLERANCE  # context now per window


@pytest.mark.parametrize(("size", "stride"), [(200, 100), (224, 100)])
def test_windows_must_be_whole_patches(clip_dir: Path, size: int, stride: int) -> None:
    with pytest.raises(ConfigError, match="multiples of the patch size 16"):
        DenseCLIP.from_pretrained(clip_dir, method="sclip", sliding_window=SlidingWindow(size=size, stride=stride))


@pytest.mark.parametrize(("size", "stride"), [(224, 0), (224, 448), (0, 0)])
def test_window_stride_between_one_and_the_window(size: int, stride: int) -> None:
    with pytest.raises(ConfigError, match="stride"):
        SlidingWindow(size=size, stride=stride)


# Registry, settings, precision, the model left alone


def test_registry_names_and_errors() -> None:
    assert tuple(DENSE_METHODS) == METHODS
    for name in METHODS:  # the torch-free listing agrees with the classes it imports
        assert DENSE_METHODS[name].name == name and DENSE_METHODS[name].settings_type is DENSE_METHODS.settings_type(name)
    with pytest.raises(ConfigError, match="choose one of gem, maskclip, sclip, clearclip, naclip, proxyclip"):
        dense_method("bestclip")
    with pytest.raises(ConfigError, match="unknown setting.*gaussian_sd.*gaussian_std"):
        dense_method("naclip", {"gaussian_sd": 3.0})
    with pytest.raises(ConfigError, match="takes NACLIPSettings, got ProxyCLIPSettings"):
        dense_method("naclip", ProxyCLIPSettings())
    with pytest.raises(ConfigError, match="already registered"):
        register_dense_method(DENSE_METHODS["sclip"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: NACLIPSettings(gaussian_std=0.0), "gaussian_std"),
        (lambda: ProxyCLIPSettings(gamma=0.0), "gamma"),
        (lambda: GEMSettings(depth=-1), "gem_depth"),
    ],
)
def test_settings_refuse_bad_values(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_gem_depth_beyond_the_model(clip_dir: Path) -> None:
    with pytest.raises(ConfigError, match="gem_depth must be between 0 and 6"):
        DenseCLIP.from_pretrained(clip_dir, method_settings={"depth": 7})


def test_a_registered_method_is_selectable_in_the_settings_too(clip_dir: Path) -> None:
    with pytest.raises(ConfigError, match="dense_method='key-query'"):
        preset("toy", dense_method="key-query")

    @register_dense_method
    class KeyQuery(FinalBlockMethod[dense_methods.ClearCLIPSettings]):
        name = "key-query"
        settings_type = dense_methods.ClearCLIPSettings

        def attend(self, queries, keys, values, grid, proxy_features):  # type: ignore[no-untyped-def]
            return F.scaled_dot_product_attention(keys[:, :, 1:], queries, values)

    try:
        assert preset("toy", dense_method="key-query").embedding.dense_options()["method"] == "key-query"
        pixels = _pixels(1, 64, 64)
        output = DenseCLIP.from_pretrained(clip_dir, method="key-query")(pixels)
        assert output.shape == (1, 4, 4, DIM)
        assert not torch.allclose(output, DenseCLIP.from_pretrained(clip_dir, method="clearclip")(pixels), atol=1e-3)
    finally:
        DENSE_METHODS.unregister("key-query")
    assert "key-query" not in DENSE_METHODS


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_is_close_to_float32(clip_dir: Path, method: str) -> None:
    pixels, proxy = _pixels(1, 96, 128), _proxy(1, 6, 8)
    low = DenseCLIP.from_pretrained(clip_dir, method=method, dtype=torch.bfloat16)(pixels, proxy_features=proxy)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, _embed(clip_dir, method, pixels, proxy), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("method", METHODS)
def test_the_model_is_not_modified(clip_dir: Path, method: str) -> None:
    embedder = DenseCLIP.from_pretrained(clip_dir, method=method)
    before = {name: tensor.clone() for name, tensor in embedder.model.state_dict().items()}
    reference = normalized(_pixels(1, 224, 224))
    with torch.no_grad():
        pooled = embedder.model(pixel_values=reference).image_embeds
    embedder(_pixels(1, 160, 224), proxy_features=_proxy(1, 10, 14))
    with torch.no_grad():
        assert torch.equal(embedder.model(pixel_values=reference).image_embeds, pooled)
    assert all(torch.equal(tensor, before[name]) for name, tensor in embedder.model.state_dict().items())
