"""The model-spec registry: custom backends built through ``TAG.from_pretrained``, and the old import paths."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from tagseg import TAG, ConfigError, DatabaseError, preset, toy
from tagseg.backbones import base, clip, dinov2, hub
from tagseg.builder import Backend, build, download_models, model_status, register_backend, unregister_backend
from tagseg.config import TAGConfig
from tagseg.testing import save_random_clip
from toy_support import named_iou

SHADE_SCENE = ["grey", "sky blue", "navy blue", "brown"]


@pytest.fixture
def shades_backend() -> Iterator[list[tuple[str, str, str]]]:
    """The toy world with two-word shades, registered under the prefix ``shades:``; records every build."""
    built: list[tuple[str, str, str]] = []

    def record(seam: str, make):  # type: ignore[no-untyped-def]
        def builder(spec: str, config: TAGConfig):  # type: ignore[no-untyped-def]
            built.append((seam, spec, config.device))
            return make()

        return builder

    register_backend(
        "shades:",
        Backend(
            features=record("features", lambda: toy.ToyPatchFeatures(shades=True)),
            embedder=record("embedder", lambda: toy.ToyDenseEmbedder(shades=True)),
            text_encoder=record("text_encoder", lambda: toy.ToyTextEncoder(shades=True)),
            description="the toy world with shades",
        ),
    )
    yield built
    unregister_backend("shades:")


def test_a_registered_backend_builds_the_tag_that_from_pretrained_returns(shades_backend) -> None:
    tag = TAG.from_pretrained(
        "toy", feature_model="shades:a", clip_model="shades:b", database="toy", names="phrases", device="cpu"
    )
    assert shades_backend == [("features", "shades:a", "cpu"), ("embedder", "shades:b", "cpu"), ("text_encoder", "shades:b", "cpu")]
    assert tag.models["embedder"] == "tagseg/toy-joint-space+shades"
    assert len(tag.database) == len(toy.toy_captions(shades=True))  # the toy database, embedded by the backend's encoder
    image, regions, names = toy.toy_scene(0, names=SHADE_SCENE)
    result = tag(image)
    assert set(result.labels) == set(SHADE_SCENE)  # only the shaded world can name "sky blue"
    assert min(named_iou(result, regions, names)) > 0.8


def test_registered_specs_are_built_in_for_the_model_cache(shades_backend, tmp_path: Path) -> None:
    statuses = model_status(["shades:x", "toy", "facebook/dinov2-small", str(tmp_path / "none")], cache_dir=tmp_path)
    assert [(s.kind, s.location, s.ready) for s in statuses[:2]] == [
        ("builtin", "the toy world with shades", True),
        ("builtin", "built into tagseg", True),
    ]
    assert [(s.kind, s.ready) for s in statuses[2:]] == [("hub", False), ("local", False)]
    assert download_models(["shades:x", "toy", str(tmp_path)]) == []  # nothing to fetch, no network asked


def test_the_longest_registered_prefix_wins_and_an_exact_name_only_matches_itself(shades_backend) -> None:
    register_backend("shades:navy:", Backend(features=lambda spec, config: toy.ToyPatchFeatures()))
    try:
        config = preset("toy", feature_model="shades:navy:one")
        assert build(config).features.shades is False  # type: ignore[attr-defined]
        assert build(preset("toy", feature_model="shades:sky")).features.shades is True  # type: ignore[attr-defined]
        assert model_status(["toy2"], cache_dir="/nonexistent")[0].kind == "hub"  # "toy" is exact, not a prefix
    finally:
        unregister_backend("shades:navy:")


def test_each_seam_comes_from_its_own_spec(tmp_path: Path) -> None:
    """Toy patch features with a (tiny, random) CLIP for the joint space and the toy captions as database."""
    clip_dir = save_random_clip(tmp_path / "clip", "tiny")
    tag = TAG.from_pretrained("toy", clip_model=str(clip_dir), database="toy", image_size=64, num_clusters=3, crf=False)
    assert isinstance(tag.features, toy.ToyPatchFeatures)
    assert isinstance(tag.embedder, clip.DenseCLIP) and isinstance(tag.text_encoder, clip.CLIPTextEncoder)
    assert (tag.embedder.method.name, tag.embedder.method.settings.depth) == ("gem", 0)  # the toy preset's gem_depth
    assert tag.database.model_id == str(clip_dir)
    result = tag(toy.toy_scene(1, size=(64, 64))[0])
    assert result.label_map.shape == (64, 64) and 1 <= len(result.segments) <= 3


def test_a_backend_without_a_seam_says_which_model_to_change() -> None:
    register_backend("features-only", Backend(features=lambda spec, config: toy.ToyPatchFeatures(), description="features only"))
    try:
        with pytest.raises(ConfigError, match=r"'features-only' \(features only\) provides no dense image embedder; set clip_model"):
            TAG.from_pretrained("toy", clip_model="features-only")
        assert isinstance(build(preset("toy", feature_model="features-only")).features, toy.ToyPatchFeatures)
    finally:
        unregister_backend("features-only")


def test_registration_refuses_duplicates_and_paths() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("toy", Backend())
    for spec in ("", "owner/name", "./models", "~/models"):
        with pytest.raises(ConfigError, match="plain name"):
            register_backend(spec, Backend())
    with pytest.raises(KeyError):
        unregister_backend("never-registered")


def test_a_missing_database_folder_is_refused_before_a_registered_backend_builds(shades_backend, tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        TAG.from_pretrained("toy", feature_model="shades:a", database=tmp_path / "none")
    assert shades_backend == []


@pytest.mark.parametrize(
    ("old", "name", "home"),
    [
        ("tagseg.models", "load_pretrained", hub),
        ("tagseg.models", "resolve_device", hub),
        ("tagseg.models", "check_pixels", base),
        ("tagseg.models", "image_normalization", base),
        ("tagseg.features", "Dinov2Features", dinov2),
        ("tagseg.features", "IMAGENET_MEAN", dinov2),
        ("tagseg.clip_dense", "GEMDenseCLIP", clip),
        ("tagseg.clip_dense", "CLIPTextEncoder", clip),
    ],
)
def test_old_import_paths_still_work_and_warn(old: str, name: str, home) -> None:  # type: ignore[no-untyped-def]
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {home.__name__}.{name}") as caught:
        value = getattr(module, name)
    assert value is getattr(home, name)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert name in dir(module)


def test_old_paths_refuse_names_that_never_existed() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImportError):
            exec("from tagseg.features import NoSuchThing")


def test_api_keeps_the_model_cache_names() -> None:
    import tagseg.api as api
    import tagseg.builder as builder

    warnings.simplefilter("ignore", DeprecationWarning)  # the shim warns on every name; test_result checks that
    assert (api.model_status, api.download_models) == (builder.model_status, builder.download_models)
    assert (api.ModelStatus, api.config_models) == (hub.ModelStatus, builder.config_models)
    paper = preset("paper")
    assert api.config_models(paper) == [paper.feature_model, paper.clip_model]
    assert api.config_models(preset("toy")) == ["toy"]  # one spec for both models, listed once
