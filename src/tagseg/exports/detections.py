"""Adapter to the ``supervision`` library (optional dependency: ``pip install supervision``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tagseg.exports.categories import CategoryTable
from tagseg.result import Segmentation

__all__ = ["to_detections"]


def to_detections(result: Segmentation, categories: CategoryTable | None = None, *, instances: bool = True) -> Any:
    """``supervision.Detections`` of a result: masks, boxes, confidences (segment scores), class ids.

    One detection per instance (:meth:`~tagseg.result.Segment.instances`: a SAM mask with its
    predicted IoU as confidence, or a segment's separate region), or per segment with ``instances=False``. Class ids come from ``categories`` (ids of a run), else count segments
    0, 1, ... in result order. ``data`` holds ``class_name`` and ``segment_id`` arrays, so
    supervision's annotators label detections by name.
    """
    try:
        import supervision as sv
    except ImportError:
        raise ImportError(
            "tagseg.exports.to_detections needs the optional package supervision: pip install supervision"
        ) from None
    rows = []
    for index, segment in enumerate(result.segments):
        class_id = categories.id(segment.label) if categories is not None else index
        if class_id is None:
            continue
        for mask, score in [(i.mask, i.score) for i in segment.instances()] if instances else [(segment.mask, segment.score)]:
            rows.append((mask, score, class_id, segment))
    if not rows:
        return sv.Detections.empty()
    masks = np.stack([mask for mask, _, _, _ in rows])
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=np.array([score for _, score, _, _ in rows], dtype=np.float32),
        class_id=np.array([c for _, _, c, _ in rows], dtype=np.int64),
        data={
            "class_name": np.array([s.label for _, _, _, s in rows]),
            "segment_id": np.array([s.id for _, _, _, s in rows], dtype=np.int64),
        },
    )
