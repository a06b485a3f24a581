"""Scoring helpers shared by the toy-world tests."""

from __future__ import annotations

import numpy as np

from tagseg.result import Segmentation


def named_iou(result: Segmentation, regions: np.ndarray, names: list[str]) -> list[float]:
    """Per true region, IoU with the union of predicted segments carrying the region's name."""
    ious = []
    for region, name in enumerate(names):
        truth = regions == region
        predicted = np.isin(result.label_map, [s.id for s in result.segments if s.label == name])
        ious.append(float((truth & predicted).sum() / (truth | predicted).sum()))
    return ious
