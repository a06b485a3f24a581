"""DINOv2 patch features on tiny random checkpoints, loaded the way users load real ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tagseg.backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD, Dinov2Features
from tagseg.interfaces import PatchFeatureExtractor
from tagseg.testing import save_random_dinov2


def _pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _normalized(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_attributes_and_protocol(dinov2_dir: Path) -> None:
    features = Dinov2Features.from_pretrained(dinov2_dir)
    assert isinstance(features, PatchFeatureExtractor)
    assert (features.patch_size, features.dim, features.model_id) == (14, 32, str(dinov2_dir))


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 224, 224), (2, 448, 336), (1, 336, 448), (1, 14, 28)])
def test_shapes(dinov2_dir: Path, batch: int, height: int, width: int) -> None:
    output = Dinov2Features.from_pretrained(dinov2_dir)(_pixels(batch, height, width))
    assert output.shape == (batch, height // 14, width // 14, 32)
    assert output.dtype == torch.float32 and not output.requires_grad


@pytest.mark.parametrize("registers", [False, True])
def test_patch_tokens_are_the_final_norm_tokens_in_row_major_order(
    dinov2_dir: Path, registers_dir: Path, registers: bool
) -> None:
    features = Dinov2Features.from_pretrained(registers_dir if registers else dinov2_dir)
    pixels = _pixels(2, 448, 336)
    with torch.no_grad():
        tokens = features.model(pixel_values=_normalized(pixels, IMAGENET_MEAN, IMAGENET_STD)).last_hidden_state
    prefix = 5 if registers else 1
    assert tokens.shape[1] == prefix + 32 * 24
    expected = tokens[:, prefix:].reshape(2, 32, 24, 32)
    torch.testing.assert_close(features(pixels), expected, rtol=1e-5, atol=1e-5)


def test_normalize_switch(dinov2_dir: Path) -> None:
    pixels = _pixels(1, 224, 224)
    normalized = Dinov2Features.from_pretrained(dinov2_dir)(pixels)
    raw_features = Dinov2Features.from_pretrained(dinov2_dir, normalize=False)
    raw = raw_features(pixels)
    assert not torch.allclose(normalized, raw, atol=1e-3)
    with torch.no_grad():
        expected = raw_features.model(pixel_values=pixels).last_hidden_state[:, 1:].reshape(raw.shape)
    torch.testing.assert_close(raw, expected, rtol=1e-5, atol=1e-5)


def test_mean_and_std_come_from_the_preprocessor_config(dinov2_dir: Path, tmp_path: Path) -> None:
    custom = save_random_dinov2(tmp_path / "custom")
    config_path = custom / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config["image_mean"], config["image_std"] = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    config_path.write_text(json.dumps(config))
    features = Dinov2Features.from_pretrained(custom)
    pixels = _pixels(1, 112, 112)
    with torch.no_grad():
        expected = features.model(pixel_values=(pixels - 0.5) / 0.25).last_hidden_state[:, 1:].reshape(1, 8, 8, 32)
    torch.testing.assert_close(features(pixels), expected, rtol=1e-5, atol=1e-5)

    config_path.unlink()  # no preprocessor config: ImageNet statistics
    defaults = Dinov2Features.from_pretrained(custom)(pixels)
    torch.testing.assert_close(defaults, Dinov2Features.from_pretrained(dinov2_dir)(pixels), rtol=0, atol=0)


def test_rejects_bad_input(dinov2_dir: Path) -> None:
    features = Dinov2Features.from_pretrained(dinov2_dir)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        features(_pixels(1, 224, 230))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        features(torch.rand(3, 224, 224))


def test_dtype_option(dinov2_dir: Path) -> None:
    features = Dinov2Features.from_pretrained(dinov2_dir, dtype=torch.bfloat16)
    assert next(features.model.parameters()).dtype == torch.bfloat16
    output = features(_pixels(1, 56, 56))
    assert output.dtype == torch.float32 and output.shape == (1, 4, 4, 32)
