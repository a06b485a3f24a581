"""GEM dense CLIP and the CLIP text encoder on tiny random checkpoints.

The GEM output is checked against a straightforward computation written here from the
equations (explicit softmax, one head and one image at a time).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPVisionModelWithProjection

from tagseg.backbones.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIPTextEncoder, GEMDenseCLIP, clean_clip_text
from tagseg.errors import ConfigError
from tagseg.interfaces import DenseImageEmbedder, TextEncoder
from tagseg.testing import save_random_clip

PATCH, DIM, LAYERS = 16, 24, 6


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def text_encoder(clip_dir: Path) -> CLIPTextEncoder:
    return CLIPTextEncoder.from_pretrained(clip_dir)


def _pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _normalized(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=-1, keepdim=True)


@torch.no_grad()
def reference_gem(model: CLIPVisionModelWithProjection, pixels: torch.Tensor, depth: int) -> torch.Tensor:
    """GEM as the equations state it, with the original path run by the unmodified transformers blocks."""
    vision = model.vision_model
    batch = pixels.shape[0]
    patches = F.conv2d(pixels, vision.embeddings.patch_embedding.weight, stride=PATCH)
    grid_height, grid_width = patches.shape[-2:]
    table = vision.embeddings.position_embedding.weight
    side = math.isqrt(table.shape[0] - 1)
    square = table[1:].reshape(side, side, -1).permute(2, 0, 1).unsqueeze(0)
    if (grid_height, grid_width) != (side, side):
        square = F.interpolate(square, size=(grid_height, grid_width), mode="bicubic", antialias=True)
    positions = torch.cat([table[:1], square[0].permute(1, 2, 0).reshape(grid_height * grid_width, -1)])
    class_token = vision.embeddings.class_embedding.expand(batch, 1, -1)
    original = torch.cat([class_token, patches.flatten(2).transpose(1, 2)], dim=1) + positions
    original = vision.pre_layrnorm(original)

    layers = vision.encoder.layers
    for layer in layers[: len(layers) - depth]:
        original = layer(original, None)
    gem = original.clone()
    for layer in layers[len(layers) - depth :]:
        attention = layer.self_attn
        head_dim = attention.head_dim
        t = layer.layer_norm1(original)
        projections = [attention.q_proj(t), attention.k_proj(t), attention.v_proj(t)]
        values = projections[2]
        merged = torch.zeros_like(t)
        for image in range(batch):
            inverse_temperature = t[image].norm(dim=-1).mean() * head_dim**-0.5
            for head in range(attention.num_heads):
                columns = slice(head * head_dim, (head + 1) * head_dim)
                total = torch.zeros_like(values[image, :, columns])
                for projection in projections:
                    p = _unit(projection[image, :, columns])
                    p1 = torch.softmax(p @ p.T * inverse_temperature, dim=-1) @ p
                    p1 = _unit(p1)
                    total += torch.softmax(p1 @ p1.T * inverse_temperature, dim=-1) @ values[image, :, columns]
                merged[image, :, columns] = total / 3
        gem = gem + attention.out_proj(merged)
        original = layer(original, None)
    dense = model.visual_projection(vision.post_layernorm(gem[:, 1:]))
    return dense.reshape(batch, grid_height, grid_width, -1)


def test_attributes_and_protocol(clip_dir: Path) -> None:
    embedder = GEMDenseCLIP.from_pretrained(clip_dir)
    assert isinstance(embedder, DenseImageEmbedder)
    assert (embedder.patch_size, embedder.dim, embedder.gem_depth, embedder.model_id) == (PATCH, DIM, 6, str(clip_dir))


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 224, 224), (2, 448, 336), (1, 336, 448), (1, 32, 16)])
def test_shapes(clip_dir: Path, batch: int, height: int, width: int) -> None:
    output = GEMDenseCLIP.from_pretrained(clip_dir)(_pixels(batch, height, width))
    assert output.shape == (batch, height // PATCH, width // PATCH, DIM)
    assert output.dtype == torch.float32 and not output.requires_grad


@pytest.mark.parametrize(("depth", "height", "width"), [(6, 224, 160), (2, 224, 224), (3, 320, 256)])
def test_gem_matches_the_equations(clip_dir: Path, depth: int, height: int, width: int) -> None:
    embedder = GEMDenseCLIP.from_pretrained(clip_dir, gem_depth=depth)
    pixels = _pixels(2, height, width)  # two different images: the temperature is per image
    expected = reference_gem(embedder.model, _normalized(pixels), depth)
    torch.testing.assert_close(embedder(pixels), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embedder(pixels[1:]), expected[1:], rtol=1e-5, atol=1e-5)


def test_gem_depth_zero_is_plain_dense_clip(clip_dir: Path) -> None:
    embedder = GEMDenseCLIP.from_pretrained(clip_dir, gem_depth=0)
    pixels = _pixels(2, 224, 224)
    with torch.no_grad():
        tokens = embedder.model(pixel_values=_normalized(pixels)).last_hidden_state
        expected = embedder.model.visual_projection(embedder.model.vision_model.post_layernorm(tokens[:, 1:]))
    torch.testing.assert_close(embedder(pixels), expected.reshape(2, 14, 14, DIM), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(GEMDenseCLIP.from_pretrained(clip_dir)(pixels), embedder(pixels), atol=1e-3)


@pytest.mark.parametrize("depth", [-1, LAYERS + 1])
def test_gem_depth_out_of_range(clip_dir: Path, depth: int) -> None:
    with pytest.raises(ConfigError, match="gem_depth"):
        GEMDenseCLIP.from_pretrained(clip_dir, gem_depth=depth)


def test_original_path_and_model_are_unchanged(clip_dir: Path) -> None:
    embedder = GEMDenseCLIP.from_pretrained(clip_dir)
    pixels = _normalized(_pixels(1, 224, 224))
    state_before = {name: tensor.clone() for name, tensor in embedder.model.state_dict().items()}
    with torch.no_grad():
        pooled_before = embedder.model(pixel_values=pixels).image_embeds
    embedder(_pixels(1, 160, 224))
    with torch.no_grad():
        pooled_after = embedder.model(pixel_values=pixels).image_embeds
    torch.testing.assert_close(pooled_after, pooled_before, rtol=0, atol=0)
    assert all(torch.equal(tensor, state_before[name]) for name, tensor in embedder.model.state_dict().items())


def test_position_embeddings_resampled_and_cached(clip_dir: Path) -> None:
    embedder = GEMDenseCLIP.from_pretrained(clip_dir)
    trained = embedder.model.vision_model.embeddings.position_embedding.weight
    torch.testing.assert_close(embedder.position_embeddings(14, 14)[0], trained, rtol=0, atol=0)
    resampled = embedder.position_embeddings(28, 21)
    assert resampled.shape == (1, 1 + 28 * 21, 32)
    torch.testing.assert_close(resampled[0, 0], trained[0], rtol=0, atol=0)  # class token kept
    assert embedder.position_embeddings(28, 21) is resampled


def test_normalize_switch(clip_dir: Path) -> None:
    pixels = _pixels(1, 96, 128)
    normalized = GEMDenseCLIP.from_pretrained(clip_dir)(pixels)
    raw_embedder = GEMDenseCLIP.from_pretrained(clip_dir, normalize=False)
    raw = raw_embedder(pixels)
    assert not torch.allclose(normalized, raw, atol=1e-3)
    torch.testing.assert_close(raw, reference_gem(raw_embedder.model, pixels, 6), rtol=1e-5, atol=1e-5)


def test_dtype_option(clip_dir: Path) -> None:
    pixels = _pixels(1, 64, 96)
    low_precision = GEMDenseCLIP.from_pretrained(clip_dir, dtype=torch.bfloat16)
    assert next(low_precision.model.parameters()).dtype == torch.bfloat16
    output = low_precision(pixels)
    assert output.dtype == torch.float32 and output.shape == (1, 4, 6, DIM)
    torch.testing.assert_close(output, GEMDenseCLIP.from_pretrained(clip_dir)(pixels), rtol=0.1, atol=0.1)


def test_rejects_bad_input(clip_dir: Path) -> None:
    with pytest.raises(ValueError, match="multiple of the patch size"):
        GEMDenseCLIP.from_pretrained(clip_dir)(_pixels(1, 224, 220))


# Text encoder


def test_text_encoder_attributes_and_protocol(text_encoder: CLIPTextEncoder, clip_dir: Path) -> None:
    assert isinstance(text_encoder, TextEncoder)
    assert (text_encoder.dim, text_encoder.model_id, text_encoder.max_length) == (DIM, str(clip_dir), 77)


def test_text_embeddings_are_normalised_float32_cpu(text_encoder: CLIPTextEncoder) -> None:
    embeddings = text_encoder.encode(["cat", "a photo of a dog", "zebra"])
    assert embeddings.shape == (3, DIM) and embeddings.dtype == torch.float32 and embeddings.device.type == "cpu"
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert text_encoder.encode([]).shape == (0, DIM)


def test_text_embedding_matches_the_model_on_unpadded_tokens(text_encoder: CLIPTextEncoder, clip_dir: Path) -> None:
    tokens = AutoTokenizer.from_pretrained(clip_dir)(["a photo of a cat"], return_tensors="pt")
    with torch.no_grad():
        expected = F.normalize(text_encoder.model(input_ids=tokens["input_ids"]).text_embeds, dim=-1)
    torch.testing.assert_close(text_encoder.encode(["a photo of a cat"]), expected, rtol=1e-5, atol=1e-5)


def test_text_padding_and_batch_invariance(clip_dir: Path, text_encoder: CLIPTextEncoder) -> None:
    long_text = "a photo of the dog on the grass near the road and a tree under the sky " * 3
    texts = ["cat", long_text, "person", "sheep", "a bicycle", "x"]
    alone = torch.cat([text_encoder.encode([text]) for text in texts])
    together = text_encoder.encode(texts)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    for batch_size in (1, 2, 4):
        batched = CLIPTextEncoder.from_pretrained(clip_dir, batch_size=batch_size).encode(texts)
        torch.testing.assert_close(batched, together, rtol=0, atol=1e-5)
    torch.testing.assert_close(text_encoder.encode(texts[::-1]), together.flip(0), rtol=0, atol=1e-5)


# Written as OpenAI's CLIP sees them after its ftfy + HTML cleaning; the raw forms drift otherwise.
_DIRTY_AND_CLEAN = [
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("Tom &amp;amp; Jerry", "Tom & Jerry"),
    ("dog\u2019s bowl", "dog's bowl"),
    ("caf\u00c3\u00a9", "caf\u00e9"),
    ("\ufb01sh", "fish"),
    ("  a   cat\n", "a cat"),
]


@pytest.mark.parametrize("dirty, clean", _DIRTY_AND_CLEAN)
def test_clean_clip_text(dirty: str, clean: str) -> None:
    assert clean_clip_text(dirty) == clean


def test_text_encoder_cleans_texts_before_tokenizing(text_encoder: CLIPTextEncoder, clip_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    dirty, clean = zip(*_DIRTY_AND_CLEAN[:5])
    # Hugging Face's tokenizer alone does not clean: every dirty form tokenizes differently.
    assert all(tokenizer(d)["input_ids"] != tokenizer(c)["input_ids"] for d, c in zip(dirty, clean))
    torch.testing.assert_close(text_encoder.encode(list(dirty)), text_encoder.encode(list(clean)), rtol=0, atol=1e-6)


def test_long_texts_are_truncated(text_encoder: CLIPTextEncoder) -> None:
    very_long = " ".join(["photo"] * 300)
    embeddings = text_encoder.encode([very_long, "cat"])
    assert embeddings.shape == (2, DIM) and torch.isfinite(embeddings).all()


def test_text_encoder_rejects_a_bare_string_and_bad_batch_size(text_encoder: CLIPTextEncoder, clip_dir: Path) -> None:
    with pytest.raises(TypeError):
        text_encoder.encode("cat")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        CLIPTextEncoder.from_pretrained(clip_dir, batch_size=0)
