"""Overlapping masks into one label per pixel: the documented rule, on masks made by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tagseg.interfaces import MaskProposals
from tagseg.segmenters.regions import regions_from_masks


def _box(top: int, left: int, bottom: int, right: int, size: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def _proposals(masks: list[np.ndarray], scores: list[float]) -> MaskProposals:
    return MaskProposals(masks=np.stack(masks), scores=np.asarray(scores, dtype=np.float32))


def _owner_by_brute_force(proposals: MaskProposals) -> np.ndarray:
    """Per pixel, the index of the covering mask with the smallest area, then highest score, then first; -1 if none."""
    masks, scores = proposals.masks, proposals.scores
    areas = [int(mask.sum()) for mask in masks]
    owner = np.full(masks.shape[1:], -1)
    for y in range(masks.shape[1]):
        for x in range(masks.shape[2]):
            covering = [i for i in range(len(masks)) if masks[i, y, x]]
            if covering:
                owner[y, x] = min(covering, key=lambda i: (areas[i], -float(scores[i]), i))
    return owner


def _owner(result) -> np.ndarray:
    """The proposal index behind every pixel of a region map (-1 for uncovered pixels)."""
    return result.proposal[result.label_map]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_mask_inside_another_stays_visible_in_either_order_and_at_a_lower_score(order: tuple[int, int]) -> None:
    # "first mask wins" (argmax over a stack) hides the inner mask in one order, "last mask wins" in the
    # other, and "most confident on top" always: the whole scores higher than its part here.
    whole, part = _box(0, 0, 10, 10), _box(3, 3, 6, 6)
    masks, scores = [whole, part], [0.99, 0.80]
    proposals = _proposals([masks[i] for i in order], [scores[i] for i in order])
    result = regions_from_masks(proposals)
    owner = _owner(result)
    part_index, whole_index = order.index(1), order.index(0)
    assert (owner[part] == part_index).all()
    assert (owner[whole & ~part] == whole_index).all()
    assert len(result) == 2 and result.unlabelled is None


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_equal_areas_overlap_goes_to_the_more_confident_mask(order: tuple[int, int]) -> None:
    # Sorting by area alone (a stable sort keeps input order) would hand the overlap to whichever came last.
    left, right = _box(0, 0, 6, 6), _box(2, 2, 8, 8)  # both 36 pixels, overlapping in 4x4
    masks, scores = [left, right], [0.7, 0.9]
    proposals = _proposals([masks[i] for i in order], [scores[i] for i in order])
    owner = _owner(regions_from_masks(proposals))
    assert (owner[left & right] == order.index(1)).all()
    assert (owner[left & ~right] == order.index(0)).all()


def test_equal_area_and_score_goes_to_the_mask_listed_first() -> None:
    left, right = _box(0, 0, 6, 6), _box(2, 2, 8, 8)
    owner = _owner(regions_from_masks(_proposals([left, right], [0.5, 0.5])))
    assert (owner[left & right] == 0).all()
    owner = _owner(regions_from_masks(_proposals([right, left], [0.5, 0.5])))
    assert (owner[left & right] == 0).all()


def test_a_mask_hidden_everywhere_is_no_region_and_labels_stay_compact() -> None:
    # The whole is covered entirely by its two halves: it must not survive as an empty label.
    whole, top, bottom = _box(0, 0, 4, 10), _box(0, 0, 2, 10), _box(2, 0, 4, 10)
    result = regions_from_masks(_proposals([whole, top, bottom], [0.9, 0.9, 0.9]))
    assert sorted(result.proposal.tolist()) == [-1, 1, 2]  # the halves and the uncovered rows 4..9
    assert set(np.unique(result.label_map)) == set(range(len(result)))


def test_uncovered_pixels_form_one_unlabelled_region() -> None:
    # Stacking masks behind a zero background and taking argmax gives uncovered pixels to mask 0.
    first, second = _box(0, 0, 3, 3), _box(5, 5, 9, 9)
    result = regions_from_masks(_proposals([first, second], [0.9, 0.8]), uncovered="unlabelled")
    uncovered = ~(first | second)
    assert result.unlabelled is not None
    assert (result.label_map[uncovered] == result.unlabelled).all()
    assert not (result.label_map[first | second] == result.unlabelled).any()
    assert result.proposal[result.unlabelled] == -1


def test_uncovered_pixels_take_fallback_labels_that_never_collide_with_mask_labels() -> None:
    mask = _box(0, 0, 5, 5)
    fallback = np.zeros((10, 10), dtype=np.int64)
    fallback[:, 5:] = 7  # two fallback segments, 0 (left half) and 7 (right half)
    fallback[0:5, 0:5] = 3  # a third one that the mask covers entirely
    result = regions_from_masks(_proposals([mask], [0.9]), uncovered="fallback", fallback=fallback)
    assert len(result) == 3  # the mask, fallback 0's uncovered part, fallback 7
    mask_label = int(result.label_map[0, 0])
    assert result.proposal[mask_label] == 0 and result.fallback[mask_label] == -1
    for value in (0, 7):
        where = (fallback == value) & ~mask
        labels = np.unique(result.label_map[where])
        assert len(labels) == 1 and labels[0] != mask_label and result.fallback[labels[0]] == value
    assert result.unlabelled is None and 3 not in result.fallback


def test_fallback_is_required_and_checked() -> None:
    proposals = _proposals([_box(0, 0, 5, 5)], [0.9])
    with pytest.raises(ValueError, match="fallback"):
        regions_from_masks(proposals, uncovered="fallback")
    with pytest.raises(ValueError, match="shape"):
        regions_from_masks(proposals, uncovered="fallback", fallback=np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="uncovered"):
        regions_from_masks(proposals, uncovered="background")  # type: ignore[arg-type]


def test_random_overlapping_masks_follow_the_rule_pixel_by_pixel() -> None:
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(12):
        top, left = rng.integers(0, 20, size=2)
        height, width = rng.integers(2, 12, size=2)
        masks.append(_box(top, left, top + height, left + width, size=(24, 24)))
    scores = rng.choice([0.5, 0.7, 0.9], size=len(masks))  # repeated scores: ties occur
    proposals = _proposals(masks, list(scores))
    result = regions_from_masks(proposals)
    owner = _owner_by_brute_force(proposals)
    assert np.array_equal(_owner(result), owner)
    assert set(np.unique(result.label_map)) == set(range(len(result)))


def test_no_masks_leaves_one_unlabelled_region() -> None:
    proposals = MaskProposals(masks=np.zeros((0, 6, 8), dtype=bool), scores=np.zeros(0, dtype=np.float32))
    result = regions_from_masks(proposals)
    assert result.label_map.shape == (6, 8) and (result.label_map == 0).all() and result.unlabelled == 0
