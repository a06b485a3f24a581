"""Overlapping masks into one label per pixel.

The rule: **every pixel takes the smallest mask that covers it; between masks of equal area, the
higher score; between equal scores, the mask listed first.** Smaller masks are the parts and
details (a face on a person, a window on a house), so they stay visible on top of the wholes that
contain them; a mask hidden everywhere by smaller ones disappears. Pixels that no mask covers
either take the labels of a ``fallback`` map (Stage 1's k-means segments), one region per fallback
label, or form one region of their own, the *unlabelled* region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tagseg.interfaces import MaskProposals

__all__ = ["UNCOVERED_CHOICES", "RegionMap", "Uncovered", "regions_from_masks"]

Uncovered = Literal["fallback", "unlabelled"]
UNCOVERED_CHOICES: tuple[Uncovered, ...] = ("fallback", "unlabelled")


@dataclass(frozen=True)
class RegionMap:
    """One label per pixel, and where each label came from.

    ``label_map`` is ``(H, W)`` int32 with labels ``0..n-1``: the visible masks first (in the
    order of the proposals), then the regions of uncovered pixels. For each label, ``proposal``
    holds the index of its mask in the proposals (-1 for uncovered pixels) and ``fallback`` the
    fallback label it took (-1 for masks and for the unlabelled region).
    """

    label_map: np.ndarray
    proposal: np.ndarray
    fallback: np.ndarray

    def __len__(self) -> int:
        return int(self.proposal.shape[0])

    @property
    def unlabelled(self) -> int | None:
        """The label of the pixels no mask covers, when they were left unlabelled (else ``None``)."""
        found = np.flatnonzero((self.proposal < 0) & (self.fallback < 0))
        return int(found[0]) if found.size else None


def regions_from_masks(
    proposals: MaskProposals,
    *,
    uncovered: Uncovered = "unlabelled",
    fallback: np.ndarray | None = None,
) -> RegionMap:
    """Resolve overlaps by the module's rule and label the pixels no mask covers.

    ``uncovered="fallback"`` needs ``fallback``, an integer map of the masks' size; its labels fill
    the uncovered pixels (one region per fallback label that has uncovered pixels).
    """
    masks, scores = proposals.masks, np.asarray(proposals.scores, dtype=np.float64)
    if uncovered not in UNCOVERED_CHOICES:
        raise ValueError(f"uncovered must be one of {', '.join(UNCOVERED_CHOICES)}, not {uncovered!r}")
    size = masks.shape[1:]
    if uncovered == "fallback":
        if fallback is None:
            raise ValueError('uncovered="fallback" needs a fallback label map (e.g. the k-means segments)')
        fallback = np.asarray(fallback)
        if fallback.shape != size or not np.issubdtype(fallback.dtype, np.integer):
            raise ValueError(f"the fallback map must be integer of shape {size}, not {fallback.dtype} {fallback.shape}")
    areas = masks.sum(axis=(1, 2))
    index = np.arange(len(masks))
    # Paint the lowest priority first: large before small, low score before high, later before earlier.
    paint_order = np.lexsort((-index, scores, -areas))
    owner = np.full(size, -1, dtype=np.int64)
    for mask in paint_order:
        owner[masks[mask]] = mask
    visible = np.flatnonzero(np.bincount(owner[owner >= 0], minlength=len(masks)))
    label_of_mask = np.full(len(masks) + 1, -1, dtype=np.int64)  # the last slot stands for "no mask"
    label_of_mask[visible] = np.arange(len(visible))
    label_map = label_of_mask[owner]  # owner -1 picks the last slot
    proposal, fallback_label = list(visible), [-1] * len(visible)
    uncovered_pixels = owner < 0
    if uncovered_pixels.any():
        if uncovered == "unlabelled":
            label_map[uncovered_pixels] = len(proposal)
            proposal.append(-1)
            fallback_label.append(-1)
        else:
            assert fallback is not None
            values, inverse = np.unique(fallback[uncovered_pixels], return_inverse=True)
            label_map[uncovered_pixels] = len(proposal) + inverse.ravel()
            proposal += [-1] * len(values)
            fallback_label += [int(v) for v in values]
    return RegionMap(
        label_map=label_map.astype(np.int32),
        proposal=np.asarray(proposal, dtype=np.int64),
        fallback=np.asarray(fallback_label, dtype=np.int64),
    )
