"""One confusion matrix over a dataset and the scores read from it.

The matrix has one row per ground-truth class and one column per class plus a last "unassigned"
column for pixels whose prediction maps to no class (an abstaining threshold, an unmatched oracle
segment). Ignored ground-truth pixels never enter it.

IoU of class ``c`` = TP / (TP + FP + FN). A class with no ground-truth pixel and no predicted pixel
has no IoU (NaN) and is left out of the mean; a class with no ground-truth pixel that was predicted
somewhere has IoU 0 and counts, as in mmsegmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``(C, C + 1)`` pixel counts; ``predicted`` holds class indices, or -1 / ``num_classes`` for unassigned.

    Ground-truth pixels equal to ``ignore_index`` (or outside ``0..C-1``) are skipped.
    """
    truth = np.asarray(truth).ravel().astype(np.int64)
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {predicted.size}")
    valid = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
    columns = np.where((predicted < 0) | (predicted >= num_classes), num_classes, predicted)
    flat = truth[valid] * (num_classes + 1) + columns[valid]
    return np.bincount(flat, minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


@dataclass(frozen=True)
class Scores:
    """Per-class IoU and accuracy (NaN where undefined), their means, and pixel accuracy."""

    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    mean_accuracy: float
    pixel_accuracy: float
    num_scored_classes: int


def scores(confusion: np.ndarray) -> Scores:
    """Scores of a ``(C, C + 1)`` (or square ``(C, C)``) confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    true_positive = np.diag(confusion[:, :num_classes])
    truth_total = confusion.sum(axis=1)
    predicted_total = confusion[:, :num_classes].sum(axis=0)
    union = truth_total + predicted_total - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(truth_total > 0, true_positive / truth_total, np.nan)
    total = truth_total.sum()
    scored = ~np.isnan(iou)
    return Scores(
        iou=iou,
        accuracy=accuracy,
        miou=float(iou[scored].mean()) if scored.any() else float("nan"),
        mean_accuracy=float(np.nanmean(accuracy)) if (truth_total > 0).any() else float("nan"),
        pixel_accuracy=float(true_positive.sum() / total) if total > 0 else float("nan"),
        num_scored_classes=int(scored.sum()),
    )
