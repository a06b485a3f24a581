"""Presets, overrides and TOML configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tagseg.config import (
    ClusterSettings,
    ControlSettings,
    CRFSettings,
    TAGConfig,
    config_toml,
    load_config,
    preset,
    resolve_config,
)
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


def test_toml_section_tables_and_flat_keys_load_together(tmp_path: Path) -> None:
    path = tmp_path / "tagseg.toml"
    path.write_text(
        'preset = "toy"\ntop_k = 4\n'
        '[models]\nimage_size = 128\n'
        '[clusters]\nnum_clusters = "auto"\nmax_clusters = 6\n'
        '[clusters.crf]\niterations = 3\n'
        '[controls]\nvocabulary = ["cat", "dog"]\naliases = {kitten = "cat"}\n'
    )
    config = load_config(path)
    assert config.models.image_size == 128 and config.models.feature_model == "toy"  # the rest from the preset
    assert (config.clusters.num_clusters, config.clusters.max_clusters, config.clusters.crf.iterations) == ("auto", 6, 3)
    assert config.naming.top_k == 4 and config.naming == preset("toy").naming.replace(top_k=4)
    assert config.controls.vocabulary == ["cat", "dog"] and config.aliases == {"kitten": "cat"}
    flat = tmp_path / "flat.toml"
    flat.write_text(
        'preset = "toy"\ntop_k = 4\nimage_size = 128\nnum_clusters = "auto"\nmax_clusters = 6\n'
        'vocabulary = ["cat", "dog"]\n[crf]\niterations = 3\n[aliases]\nkitten = "cat"\n'
    )
    assert load_config(flat) == config


def test_a_setting_in_the_wrong_table_is_named_with_its_section(tmp_path: Path) -> None:
    path = tmp_path / "tagseg.toml"
    path.write_text("[naming]\nnum_clusters = 3\n")
    with pytest.raises(ConfigError, match=r"num_clusters \(belongs in \[clusters\]\)"):
        load_config(path)
    path.write_text("naming = 3\n")
    with pytest.raises(ConfigError, match="table of NamingSettings"):
        load_config(path)


def test_config_toml_round_trips_every_kind_of_value(tmp_path: Path) -> None:
    config = preset("fast", num_clusters="auto", crf=False, aliases={"kitty cat": "cat", "Zoë": "dog"}, blocklist=["room"])
    path = tmp_path / "shown.toml"
    path.write_text(config_toml(config), encoding="utf-8")
    assert load_config(path) == config


def test_resolve_config_preset_replaces_the_files_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "tagseg.toml"
    path.write_text('preset = "fast"\n[clusters]\nnum_clusters = 7\n')
    assert resolve_config(None, path) == preset("fast", num_clusters=7)
    assert resolve_config("toy", path, top_k=3, seed=None) == preset("toy", num_clusters=7, top_k=3)


def test_sections_and_flat_views_agree() -> None:
    config = TAGConfig(clusters=ClusterSettings(num_clusters=4), top_k=3, crf=False)
    assert config.num_clusters == config.clusters.num_clusters == 4 and config.naming.top_k == 3
    assert config.crf.enabled is False and config.clusters.crf == CRFSettings(enabled=False)
    assert config.replace(naming={"top_k": 5}).top_k == 5
    assert config.replace(controls=ControlSettings(blocklist=["room"])).blocklist == ["room"]
    assert list(config.to_dict()) == TAGConfig.field_names()
    with pytest.raises(ConfigError, match="min_clusters=9, max_clusters=3"):
        ClusterSettings(min_clusters=9, max_clusters=3)
    with pytest.raises(AttributeError):
        config.no_such_setting  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.top_k = 4  # type: ignore[misc]
