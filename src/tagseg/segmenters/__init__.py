"""Stage 1, segment candidates: the segmenters, registered by the name the ``segmenter`` setting takes.

Every segmenter is a :class:`~tagseg.interfaces.Segmenter`: it takes a batch of forwarded images
(:class:`~tagseg.interfaces.SegmenterInput`) and returns their :class:`~tagseg.interfaces.Segments`,
which Stages 2 and 3 then pool and name whoever made them.

- ``kmeans`` (:mod:`tagseg.segmenters.kmeans`): the paper's k-means on the patch features, automatic k,
  the dense CRF and small-region merging;
- ``sam`` (:mod:`tagseg.segmenters.sam`): a region proposer's masks (Segment Anything), one label per
  pixel by :mod:`tagseg.segmenters.regions`, k-means for the pixels no mask covers.

:mod:`tagseg.segmenters.boxes` holds mask boxes and box NMS. A new segmenter is one module with a
:class:`~tagseg.interfaces.Segmenter` class, and its entry in :data:`tagseg.segmenter_registry.SEGMENTERS`
(the names the ``segmenter`` setting takes, torch-free: a built-in one names its builder below, a
segmenter of your own is added with :func:`~tagseg.segmenter_registry.register_segmenter`). This module
imports no torch either: each segmenter's module loads when a pipeline first uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tagseg.segmenter_registry import SEGMENTERS, ProposerSource, register_segmenter, segmenter_entry

if TYPE_CHECKING:
    from tagseg.interfaces import Segmenter

__all__ = ["SEGMENTERS", "build_kmeans", "build_sam", "register_segmenter", "segmenter_entry"]


def build_kmeans(proposer: ProposerSource) -> Segmenter:
    """The ``kmeans`` segmenter (it needs no region proposer)."""
    from tagseg.segmenters.kmeans import KMeansSegmenter

    return KMeansSegmenter()


def build_sam(proposer: ProposerSource) -> Segmenter:
    """The ``sam`` segmenter over the pipeline's region proposer."""
    from tagseg.segmenters.sam import ProposalSegmenter

    return ProposalSegmenter(proposer)
