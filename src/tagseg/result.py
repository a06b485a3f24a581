"""What a segmentation returns: named segments with masks, plus the evidence behind each name.

:meth:`Segmentation.to_record` is the per-image JSON document (``tagseg segment``'s ``NAME.json``,
schema: :func:`segmentation_schema`); :meth:`Segmentation.from_record` reads one back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tagseg import __version__
from tagseg.masks import instances, mask_bbox, mask_to_rle, rle_to_mask

__all__ = ["Candidate", "Instance", "Region", "Retrieved", "Segment", "Segmentation", "segmentation_schema"]


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
class Region:
    """One Stage 1 region of a segment of a ``segmenter="sam"`` result, and where it came from.

    ``proposal`` is the index of its mask in the proposer's output (SAM: most confident first) and
    ``score`` the proposer's confidence in it (SAM's predicted IoU); ``mask`` holds the pixels it
    gave the segment (the mask less the smaller masks drawn on top of it), at the image's size.
    Pixels no mask covered (k-means fallback or unlabelled) are regions with ``proposal`` -1 and
    ``score`` None.
    """

    proposal: int
    score: float | None
    mask: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Instance:
    """One instance of a segment's name, as the instance exports write it.

    ``score`` is the proposed mask's score for a SAM instance, else the segment's; ``thing`` says
    whether it is an object instance (a proposed mask, or a k-means segment's separate region) or
    stuff (the pixels of a SAM result that no mask covered); ``proposal`` is the mask's index.
    """

    mask: np.ndarray = field(repr=False)
    score: float
    thing: bool = True
    proposal: int | None = None


@dataclass
class Segment:
    """One named region. ``mask`` is a boolean (H, W) array at the input image's size.

    ``regions`` lists its Stage 1 regions when they came from a proposer (empty for k-means segments).
    """

    id: int
    label: str
    score: float
    mask: np.ndarray
    cluster_ids: list[int]
    candidates: list[Candidate] = field(default_factory=list)
    retrieved: list[Retrieved] = field(default_factory=list)
    embedding: np.ndarray | None = field(default=None, repr=False)
    regions: list[Region] = field(default_factory=list)

    @property
    def area(self) -> int:
        """Number of pixels."""
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Bounding box ``(x, y, width, height)`` in pixels (COCO convention)."""
        return mask_bbox(self.mask)

    def instances(self) -> list[Instance]:
        """The segment's instances, largest first; together they cover ``mask``.

        From proposed masks (SAM, ``regions``): one thing per mask, scored by the mask's score, and
        the pixels no mask covered (k-means fallback or unlabelled) as one stuff instance. Else the
        separate regions (8-connected components) of ``mask``: clusters that got the same name form
        one segment, and where they are far apart they stay separate instances.
        """
        if not self.regions:
            return [Instance(mask, self.score) for mask in instances(self.mask)]
        found = [Instance(r.mask, float(r.score or 0.0), True, r.proposal) for r in self.regions if r.proposal >= 0]
        uncovered = [r.mask for r in self.regions if r.proposal < 0]
        if uncovered:
            found.append(Instance(np.logical_or.reduce(uncovered), self.score, False))
        return sorted(found, key=lambda instance: -int(instance.mask.sum()))

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
        if self.regions:
            data["regions"] = [
                {
                    "proposal": r.proposal,
                    "score": None if r.score is None else round(r.score, 6),
                    **({"rle": mask_to_rle(r.mask)} if include_mask else {}),
                }
                for r in self.regions
            ]
        return data


@dataclass
class Segmentation:
    """The result for one image.

    ``label_map[y, x]`` is the index in ``segments`` of the pixel's segment; ``cluster_map`` keeps
    the Stage 1 region of every pixel before same-name regions were merged (the k-means/CRF
    cluster, or with ``segmenter="sam"`` the region of one label per pixel, ``Segment.regions``).
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

    def to_record(self, image_path: str | Path | None = None) -> dict[str, Any]:
        """The per-image JSON document: :meth:`to_dict` plus the image path, timings and tagseg version."""
        record = self.to_dict()
        if image_path is not None:
            record["image"] = {"path": str(image_path), **record["image"]}
        record["timings"] = {stage: round(seconds, 6) for stage, seconds in self.timings.items()}
        record["tagseg_version"] = __version__
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Segmentation":
        """The result a :meth:`to_record` document describes (its image path: ``record["image"].get("path")``).

        Masks come from the RLE, names, scores, candidates and retrieved texts from the record;
        embeddings are not stored there (None) and ``cluster_map`` is the label map.
        Raises ``KeyError``/``ValueError``/``TypeError`` on a document that is not a record.
        """
        height, width = record["image"]["height"], record["image"]["width"]
        label_map = np.zeros((height, width), dtype=np.int32)
        segments = []
        for data in record["segments"]:
            mask = rle_to_mask(data["rle"])
            label_map[mask] = data["id"]
            segments.append(Segment(
                id=data["id"],
                label=data["label"],
                score=data["score"],
                mask=mask,
                cluster_ids=data["cluster_ids"],
                candidates=[Candidate(c["name"], c["score"], c["count"]) for c in data.get("candidates", [])],
                retrieved=[Retrieved(r["text"], r["similarity"]) for r in data.get("retrieved", [])],
                regions=[Region(r["proposal"], r["score"], rle_to_mask(r["rle"])) for r in data.get("regions", [])],
            ))
        return cls(
            label_map, segments, label_map.copy(), dict(record.get("settings", {})), dict(record.get("models", {})),
            dict(record.get("timings", {})),
        )


def segmentation_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the per-image JSON record, as shipped with the package."""
    text = resources.files("tagseg").joinpath("data/segmentation.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
