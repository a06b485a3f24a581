"""What a segmentation returns: named segments with masks, plus the evidence behind each name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """A candidate name of a segment and its cosine with the segment embedding."""

    name: str
    score: float
    count: int


@dataclass(frozen=True)
class Retrieved:
    """A database text retrieved for a segment and its cosine with the segment embedding."""

    text: str
    similarity: float


@dataclass
class Segment:
    """One named region. ``mask`` is a boolean (H, W) array at the input image's size."""

    id: int
    label: str
    score: float
    mask: np.ndarray
    cluster_ids: list[int]
    candidates: list[Candidate] = field(default_factory=list)
    retrieved: list[Retrieved] = field(default_factory=list)
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> int:
        """Number of pixels."""
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Bounding box ``(x, y, width, height)`` in pixels (COCO convention)."""
        return mask_bbox(self.mask)

    def instances(self) -> list[np.ndarray]:
        """The segment's separate regions (8-connected components of ``mask``), largest first.

        Clusters that got the same name form one segment; where they are far apart (not touching)
        they stay separate instances here, and in the instance exports. Together they cover ``mask``.
        """
        from tagseg.granularity import connected_components

        components, count = connected_components(self.mask)
        areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
        return [components == index + 1 for index in np.argsort(-areas, kind="stable")]

    def to_dict(self, *, include_mask: bool = True) -> dict[str, Any]:
        """JSON-ready description; the mask as uncompressed COCO RLE."""
        data: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "score": round(self.score, 6),
            "area": self.area,
            "bbox": list(self.bbox),
            "cluster_ids": list(self.cluster_ids),
            "candidates": [
                {"name": c.name, "score": round(c.score, 6), "count": c.count} for c in self.candidates
            ],
            "retrieved": [{"text": r.text, "similarity": round(r.similarity, 6)} for r in self.retrieved],
        }
        if include_mask:
            data["rle"] = mask_to_rle(self.mask)
        return data


@dataclass
class Segmentation:
    """The result for one image.

    ``label_map[y, x]`` is the index in ``segments`` of the pixel's segment; ``cluster_map`` keeps
    the k-means/CRF cluster of every pixel before same-name clusters were merged.
    """

    label_map: np.ndarray
    segments: list[Segment]
    cluster_map: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the input image."""
        return (int(self.label_map.shape[0]), int(self.label_map.shape[1]))

    @property
    def labels(self) -> list[str]:
        """Segment names, index-aligned with ``segments`` and ``label_map``."""
        return [s.label for s in self.segments]

    def to_dict(self, *, include_masks: bool = True) -> dict[str, Any]:
        """JSON-ready description of the whole result."""
        height, width = self.image_size
        return {
            "image": {"height": height, "width": width},
            "models": dict(self.models),
            "settings": self.settings,
            "segments": [s.to_dict(include_mask=include_masks) for s in self.segments],
        }

    def to_json(self, *, include_masks: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(include_masks=include_masks), indent=indent)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box ``(x, y, width, height)`` of a boolean mask; zeros when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO run-length encoding (column-major, runs start with background)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    height, width = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((width, height)).T.copy()
