"""All stages together: the toy world end to end recovers every shape and names it by its colour."""

from __future__ import annotations

import numpy as np
import pytest

from tagseg import TAG
from tagseg.toy import PALETTE, ToyTextEncoder, toy_captions, toy_scene
from toy_support import named_iou


@pytest.fixture(scope="module")
def toy_tag() -> TAG:
    return TAG.from_pretrained("toy")


@pytest.mark.parametrize("seed", range(6))
def test_every_shape_is_recovered_and_named_by_its_colour(toy_tag: TAG, seed: int) -> None:
    image, regions, names = toy_scene(seed, num_shapes=3)
    result = toy_tag(image)
    assert result.label_map.shape == regions.shape
    ious = named_iou(result, regions, names)
    assert min(ious) > 0.8, dict(zip(names, ious))
    assert np.mean(ious) >= 0.9
    assert set(names) <= set(result.labels)


def test_names_come_from_the_database_not_the_palette(toy_tag: TAG) -> None:
    """Remove one colour from the captions: that colour can no longer be named."""
    image, regions, names = toy_scene(1, num_shapes=3)
    missing = names[1]
    captions = [c for c in toy_captions() if missing not in c.split()]
    from tagseg.database.memory import InMemoryTextDatabase

    encoder = ToyTextEncoder()
    result = TAG.from_pretrained("toy", database=InMemoryTextDatabase.from_texts(captions, encoder))(image)
    assert missing not in result.labels
    assert set(names) - {missing} <= set(result.labels)


def test_segments_carry_their_evidence(toy_tag: TAG) -> None:
    image, regions, names = toy_scene(2)
    result = toy_tag(image)
    for segment in result.segments:
        assert segment.candidates[0].name == segment.label
        assert segment.candidates[0].score == pytest.approx(max(c.score for c in segment.candidates))
        assert any(segment.label in r.text.split() for r in segment.retrieved)
        assert segment.area == int((result.label_map == segment.id).sum())
        assert np.array_equal(segment.mask, result.label_map == segment.id)
    assert len(set(result.labels)) == len(result.labels), "same-name clusters are merged"
    assert sum(s.area for s in result.segments) == regions.size


def test_crf_off_and_aspect_ratio_kept_still_recover_shapes() -> None:
    image, regions, names = toy_scene(4, size=(180, 360))
    result = TAG.from_pretrained("toy", crf=False, keep_aspect_ratio=True)(image)
    assert np.mean(named_iou(result, regions, names)) >= 0.85


def test_toy_palette_is_what_the_scenes_use() -> None:
    _, _, names = toy_scene(0)
    assert set(names) <= set(PALETTE)


def test_given_regions_are_named_without_being_resegmented(toy_tag: TAG) -> None:
    image, regions, names = toy_scene(3, num_shapes=3)
    regions = regions * 10 + 7  # arbitrary region values are kept as cluster ids
    regions[5:9, 5:9] = 99  # a 4x4 region, smaller than a working pixel's patch
    result = toy_tag.name_regions(image, regions)
    assert result.label_map.shape == regions.shape
    assert np.array_equal(result.cluster_map, regions)
    for region, name in enumerate(names[1:], start=1):
        [segment] = [s for s in result.segments if 10 * region + 7 in s.cluster_ids]
        assert segment.label == name
        assert segment.cluster_ids == [10 * region + 7]
        assert np.array_equal(segment.mask, regions == 10 * region + 7)  # kept whole, not re-segmented
    [background] = [s for s in result.segments if 7 in s.cluster_ids]
    assert background.label == names[0]
    assert 99 in background.cluster_ids, "the tiny region is named (by its context), not lost"
    assert "kmeans" not in result.timings and "crf" not in result.timings


def test_given_regions_must_match_the_image(toy_tag: TAG) -> None:
    image, regions, _ = toy_scene(0)
    with pytest.raises(ValueError, match="integer map of the image's size"):
        toy_tag.name_regions(image, regions[:-1])
    with pytest.raises(ValueError, match="integer map"):
        toy_tag.name_regions(image, regions.astype(float))
