"""Segment Anything as Stage 1: box NMS, the mask filters, loading, and whole runs on real photos and the toy world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tagseg import toy
from tagseg.backbones.sam import SamMaskGenerator, stability_score
from tagseg.config import SamSettings
from tagseg.errors import ConfigError, ModelNotAvailableError
from tagseg.masks import connected_components
from tagseg.interfaces import RegionProposer
from tagseg.pipeline import TAG
from tagseg.segmenters import boxes
from tagseg.segmenters.regions import regions_from_masks
from tagseg.testing import save_random_dinov2, save_random_sam
from toy_support import named_iou

# The random model's predicted IoUs are about 1e-3 and its logits about 1e-6: the quality filters are
# off unless a test is about them.
_UNFILTERED = dict(pred_iou_threshold=0.0, stability_threshold=0.0, points_per_side=6)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_sam(tmp_path_factory.mktemp("sam") / "tiny")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[::2, ::2].copy()  # 256x256, a real photo


def _iou_by_brute_force(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def _nms_by_brute_force(box_list: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    remaining = sorted(range(len(box_list)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in remaining:
        if all(_iou_by_brute_force(box_list[i], box_list[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


def _random_boxes(rng: np.random.Generator, count: int) -> torch.Tensor:
    corners = rng.uniform(0, 100, size=(count, 2))
    sides = rng.uniform(1, 40, size=(count, 2))
    return torch.tensor(np.concatenate([corners, corners + sides], axis=1), dtype=torch.float32)


@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.7])
def test_box_nms_matches_brute_force(threshold: float) -> None:
    rng = np.random.default_rng(int(threshold * 10))
    box_tensor = _random_boxes(rng, 200)
    scores = torch.tensor(rng.permutation(200) / 200.0, dtype=torch.float32)  # distinct
    expected = _nms_by_brute_force(box_tensor.tolist(), scores.tolist(), threshold)
    assert len(expected) < 200  # something was suppressed
    assert boxes._torch_nms(box_tensor, scores, threshold).tolist() == expected
    assert boxes.box_nms(box_tensor, scores, threshold).tolist() == expected


def test_box_nms_keeps_input_order_between_equal_scores() -> None:
    box_tensor = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9])
    assert boxes._torch_nms(box_tensor, scores, 0.5).tolist() == [3, 2]
    assert boxes._torch_nms(box_tensor[:3], scores[:3], 0.5).tolist() == [0, 2]


def test_box_iou_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    first, second = _random_boxes(rng, 30), _random_boxes(rng, 20)
    expected = [[_iou_by_brute_force(a, b) for b in second.tolist()] for a in first.tolist()]
    assert np.allclose(boxes.box_iou(first, second).numpy(), expected, atol=1e-6)


def test_mask_boxes_are_the_first_and_last_covered_column_and_row() -> None:
    rng = np.random.default_rng(2)
    masks = rng.random((5, 30, 40)) > 0.995
    masks[3] = False
    found = boxes.mask_boxes(torch.from_numpy(masks)).tolist()
    for mask, box in zip(masks, found):
        rows, columns = np.nonzero(mask)
        expected = [columns.min(), rows.min(), columns.max(), rows.max()] if rows.size else [0, 0, 0, 0]
        assert box == [float(v) for v in expected]


def test_stability_score_is_the_iou_of_the_strict_and_loose_masks() -> None:
    logits = torch.randn(4, 16, 16) * 3
    scores = stability_score(logits, mask_threshold=0.5, offset=1.0)
    for mask_logits, score in zip(logits.numpy(), scores.tolist()):
        strict, loose = mask_logits > 1.5, mask_logits > -0.5
        assert score == pytest.approx((strict & loose).sum() / (strict | loose).sum())


def test_settings_refuse_values_that_make_no_sense() -> None:
    with pytest.raises(ConfigError, match="points_per_side"):
        SamSettings(points_per_side=0)
    with pytest.raises(ConfigError, match="box_nms_threshold"):
        SamSettings(box_nms_threshold=1.5)
    with pytest.raises(ConfigError, match="stability_offset"):
        SamSettings(stability_offset=0.0)


def test_the_random_model_loads_through_tagsegs_loader_and_is_a_region_proposer(tiny_sam: Path, tmp_path: Path) -> None:
    generator = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu")
    assert isinstance(generator, RegionProposer)
    assert generator.model_id == str(tiny_sam)
    assert generator.processor.size.longest_edge == 128
    with pytest.raises(ModelNotAvailableError, match="no such directory"):
        SamMaskGenerator.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelNotAvailableError, match="not Segment Anything"):
        SamMaskGenerator.from_pretrained(save_random_dinov2(tmp_path / "dino"))


def test_masks_on_a_real_photo_become_a_valid_label_map(tiny_sam: Path, photo: np.ndarray) -> None:
    # Random masks spread over the whole image, so their boxes all overlap: NMS is off (threshold 1) here.
    settings = dict(**_UNFILTERED, box_nms_threshold=1.0)
    proposals = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **settings)(photo)
    assert proposals.masks.shape[1:] == photo.shape[:2] and len(proposals) > 10
    assert np.all(np.diff(proposals.scores) <= 0)  # most confident first
    assert proposals.masks.reshape(len(proposals), -1).any(axis=1).all()  # no empty mask
    regions = regions_from_masks(proposals)
    assert len(regions) > 10
    assert regions.label_map.shape == photo.shape[:2]
    assert set(np.unique(regions.label_map)) == set(range(len(regions)))
    for label, index in enumerate(regions.proposal):
        if index >= 0:  # every mask region lies inside its mask
            assert proposals.masks[index][regions.label_map == label].all()


def test_the_generator_keeps_what_box_nms_keeps(tiny_sam: Path, photo: np.ndarray) -> None:
    every = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **_UNFILTERED, box_nms_threshold=1.0)(photo)
    kept = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **_UNFILTERED, box_nms_threshold=0.7)(photo)
    found = boxes.mask_boxes(torch.from_numpy(every.masks)).tolist()
    expected = _nms_by_brute_force(found, every.scores.tolist(), 0.7)
    assert np.array_equal(kept.masks, every.masks[expected])
    assert np.array_equal(kept.scores, every.scores[expected])


def test_masks_cut_by_an_inner_crop_edge_are_recognised() -> None:
    from tagseg.backbones.sam import _cut_by_crop_edge

    crop_box, image_size = [100, 0, 300, 200], (200, 400)  # a crop in the middle, full height
    in_crop = torch.tensor(
        [
            [50.0, 50.0, 150.0, 150.0],  # well inside
            [0.0, 50.0, 100.0, 150.0],  # at the crop's left edge, which is inside the image
            [50.0, 0.0, 150.0, 199.0],  # at the crop's top and bottom, which are the image's
            [120.0, 50.0, 199.0, 150.0],  # at the crop's right edge, inside the image
        ]
    )
    assert _cut_by_crop_edge(in_crop, crop_box, image_size).tolist() == [False, True, False, True]


def test_the_quality_filters_apply(tiny_sam: Path, photo: np.ndarray) -> None:
    # The random model's predicted IoU is far below 0.5 for every mask, so nothing may pass.
    strict = dict(points_per_side=4, pred_iou_threshold=0.5, stability_threshold=0.0)
    proposals = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **strict)(photo)
    assert len(proposals) == 0 and proposals.masks.shape == (0, *photo.shape[:2])
    assert regions_from_masks(proposals).unlabelled == 0


def test_crops_and_small_region_removal(tiny_sam: Path, photo: np.ndarray) -> None:
    settings = dict(
        **{**_UNFILTERED, "points_per_side": 3},
        crop_layers=1,
        min_region_area=200,
        box_nms_threshold=1.0,
        crop_nms_threshold=1.0,
    )
    proposals = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **settings)(photo)
    assert len(proposals) > 1 and proposals.masks.shape[1:] == photo.shape[:2]
    for mask in proposals.masks:
        islands, count = connected_components(mask)
        sizes = np.bincount(islands.ravel())[1:]
        assert count == 1 or sizes.min() >= 200  # small islands are gone (a lone small one may stay)
        holes, _ = connected_components(~mask)
        assert np.bincount(holes.ravel())[1:].min(initial=200) >= 200


def test_bfloat16_runs_and_gives_masks(tiny_sam: Path, photo: np.ndarray) -> None:
    settings = dict(**_UNFILTERED, box_nms_threshold=1.0)
    generator = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **settings, dtype=torch.bfloat16)
    assert generator.dtype == torch.bfloat16
    proposals = generator(photo)
    assert len(proposals) > 0 and proposals.masks.dtype == bool


def test_sam_regions_get_names_and_evidence(tiny_sam: Path, photo: np.ndarray) -> None:
    tag = TAG.from_pretrained("toy")
    settings = dict(**_UNFILTERED, box_nms_threshold=1.0)
    proposals = SamMaskGenerator.from_pretrained(tiny_sam, device="cpu", **settings)(photo)
    regions = regions_from_masks(proposals, uncovered="fallback", fallback=tag(photo).cluster_map)
    result = tag.name_regions(photo, regions.label_map)
    assert sorted(i for s in result.segments for i in s.cluster_ids) == list(range(len(regions)))
    for segment in result.segments:
        assert segment.label and segment.candidates and segment.retrieved
    assert np.isin(result.label_map, [s.id for s in result.segments]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_truth_masks_are_named_exactly(seed: int) -> None:
    image, truth, names = toy.toy_scene(seed)
    generator = toy.ToyMaskGenerator(truth)
    assert isinstance(generator, RegionProposer)
    regions = regions_from_masks(generator(image))
    result = TAG.from_pretrained("toy").name_regions(image, regions.label_map)
    assert named_iou(result, truth, names) == [1.0] * len(names)
