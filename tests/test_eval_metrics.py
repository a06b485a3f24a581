"""Metrics against confusion matrices worked out by hand, and the oracle matching on small tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tagseg.eval import ImageOverlap, OracleProtocol, confusion_matrix, scores

# Ground truth and prediction over 3 classes; 255 is ignored.
TRUTH = np.array([[0, 0, 1], [1, 2, 255]])
PREDICTED = np.array([[0, 1, 1], [1, 1, 0]])


def test_confusion_matrix_by_hand() -> None:
    # Scored pairs (truth, predicted): (0,0) (0,1) (1,1) (1,1) (2,1); the 255 pixel is skipped.
    expected = np.array(
        [
            [1, 1, 0, 0],
            [0, 2, 0, 0],
            [0, 1, 0, 0],
        ]
    )
    assert np.array_equal(confusion_matrix(TRUTH, PREDICTED, 3), expected)


def test_scores_by_hand() -> None:
    result = scores(confusion_matrix(TRUTH, PREDICTED, 3))
    # IoU0 = 1 / (2 + 1 - 1); IoU1 = 2 / (2 + 4 - 2); IoU2 = 0 / (1 + 0 - 0).
    assert result.iou == pytest.approx([0.5, 0.5, 0.0])
    assert result.miou == pytest.approx(1 / 3)
    assert result.pixel_accuracy == pytest.approx(3 / 5)
    assert result.accuracy == pytest.approx([0.5, 1.0, 0.0])
    assert result.num_scored_classes == 3


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_mean() -> None:
    """Class 3 never occurs: its IoU is NaN and mIoU stays the mean over the three others."""
    result = scores(confusion_matrix(TRUTH, PREDICTED, 4))
    assert math.isnan(result.iou[3]) and math.isnan(result.accuracy[3])
    assert result.miou == pytest.approx(1 / 3)
    assert result.num_scored_classes == 3


def test_a_class_predicted_but_absent_from_truth_counts_as_zero() -> None:
    """A false positive of an absent class makes its IoU 0, which does enter the mean."""
    predicted = PREDICTED.copy()
    predicted[0, 0] = 3  # the class-0 pixel is now called class 3
    result = scores(confusion_matrix(TRUTH, predicted, 4))
    assert result.iou == pytest.approx([0.0, 0.5, 0.0, 0.0])
    assert result.miou == pytest.approx(0.5 / 4)
    assert result.pixel_accuracy == pytest.approx(2 / 5)


def test_unassigned_pixels_are_misses_of_their_true_class() -> None:
    predicted = PREDICTED.copy()
    predicted[0, 1] = -1  # the second class-0 pixel: no class (abstained)
    confusion = confusion_matrix(TRUTH, predicted, 3)
    assert confusion[0].tolist() == [1, 0, 0, 1]
    result = scores(confusion)
    # IoU0 = 1 / (2 + 1 - 1); IoU1 = 2 / (2 + 3 - 2); IoU2 = 0.
    assert result.iou == pytest.approx([0.5, 2 / 3, 0.0])
    assert result.pixel_accuracy == pytest.approx(3 / 5)


def test_all_ignored_gives_no_score() -> None:
    result = scores(confusion_matrix(np.full((2, 2), 255), np.zeros((2, 2)), 3))
    assert math.isnan(result.miou) and math.isnan(result.pixel_accuracy)
    assert result.num_scored_classes == 0


def test_oracle_per_image_matches_segments_one_to_one() -> None:
    # Two segments both mostly on class 0: only one may take it; the other takes class 1.
    image = ImageOverlap("a", ["x", "y"], np.array([[10, 0, 0], [6, 4, 0]]))
    confusion = OracleProtocol("image").confusion([image], ["c0", "c1", "c2"])
    assert confusion.tolist() == [[10, 6, 0, 0], [0, 4, 0, 0], [0, 0, 0, 0]]


def test_oracle_over_the_dataset_matches_each_name_once() -> None:
    # "x" is class 0 in one image and class 1 in another; over the dataset it is class 0 (12 > 5 pixels).
    images = [
        ImageOverlap("a", ["x"], np.array([[12, 0]])),
        ImageOverlap("b", ["x", "y"], np.array([[0, 5], [0, 7]])),
    ]
    oracle = OracleProtocol("dataset")
    confusion = oracle.confusion(images, ["c0", "c1"])
    assert confusion.tolist() == [[12, 0, 0], [5, 7, 0]]  # x's 5 class-1 pixels in image b are called c0
    assert oracle.mapping["x"][0] == "c0" and oracle.mapping["y"][0] == "c1"
    per_image = OracleProtocol("image").confusion(images, ["c0", "c1"])
    assert scores(per_image).miou > scores(confusion).miou
