"""Presets, overrides and TOML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagseg.config import CRFSettings, TAGConfig, load_config, preset
from tagseg.errors import ConfigError


def test_paper_preset_holds_the_reference_constants() -> None:
    config = preset("paper")
    assert (config.feature_model, config.clip_model) == ("facebook/dinov2-base", "openai/clip-vit-large-patch14")
    assert (config.image_size, config.num_clusters, config.top_k, config.gem_depth) == (448, 15, 10, 6)
    assert config.crf == CRFSettings(True, 10, 1.0, 3.0, 67.0, 3.0, 4.0)
    assert config.duplicate_threshold == 0.94 and config.prompt_template == "{}"


def test_overrides_replace_single_fields_and_crf_accepts_a_switch() -> None:
    config = preset("fast", num_clusters=6, crf=False)
    assert config.num_clusters == 6 and config.crf.enabled is False
    assert config.feature_model == "facebook/dinov2-small"
    assert config.replace(crf={"iterations": 3}).crf.iterations == 3


@pytest.mark.parametrize(
    "overrides, message",
    [({"num_clustrs": 3}, "num_clustrs"), ({"top_k": 0}, "top_k=0"), ({"prompt_template": "a photo"}, "prompt_template")],
)
def test_bad_settings_are_named_in_the_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        preset("paper", **overrides)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="paper"):
        preset("huge")


def test_toml_file_with_preset_and_crf_table(tmp_path: Path) -> None:
    path = tmp_path / "tagseg.toml"
    path.write_text('preset = "fast"\nnum_clusters = 5\n[crf]\nenabled = false\n')
    config = load_config(path, top_k=3)
    assert config == preset("fast", num_clusters=5, top_k=3, crf=False)
    path.write_text("num_clusters = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_config_round_trips_through_a_dict() -> None:
    config = preset("toy", num_clusters=4)
    data = config.to_dict()
    assert TAGConfig(**{**data, "crf": CRFSettings(**data["crf"])}) == config
