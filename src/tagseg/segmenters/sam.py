"""Stage 1 as a region proposer's masks (``segmenter="sam"``; Segment Anything, docs/sam.md).

The proposer (:class:`tagseg.backbones.sam.SamMaskGenerator`, or any
:class:`~tagseg.interfaces.RegionProposer`) proposes masks of the image at its own size; they
become one label per pixel by :func:`tagseg.segmenters.regions.regions_from_masks`. Pixels no mask
covers take the k-means segments (``uncovered="fallback"``; the patch features are computed only
then) or form one region named ``unknown_label`` (``uncovered="unlabelled"``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from tagseg.config import ClusterSettings
from tagseg.interfaces import RegionProposer, SegmenterInput, Segments
from tagseg.preprocess import resize_labels
from tagseg.segmenters.kmeans import kmeans_segments
from tagseg.segmenters.regions import regions_from_masks
from tagseg.timing import timed

__all__ = ["ProposalSegmenter", "proposal_segments"]


class ProposalSegmenter:
    """A region proposer's masks as Stage 1; the proposer gets each call's ``sam`` knobs through its
    ``with_options`` (a proposer without knobs, such as the toy world's, has none)."""

    def __init__(self, proposer: Callable[[], RegionProposer]) -> None:
        self._proposer = proposer

    def needs_patch_features(self, clusters: ClusterSettings) -> bool:
        """Never for every image: only for uncovered pixels with ``uncovered="fallback"``, asked for then."""
        return False

    def segment(self, images: Sequence[SegmenterInput], clusters: ClusterSettings) -> list[Segments]:
        """Each image's regions at its own size, with the mask each came from (see :func:`proposal_segments`)."""
        proposer = self._proposer()
        with_options = getattr(proposer, "with_options", None)
        if with_options is not None:
            proposer = with_options(**dataclasses.asdict(clusters.sam))
        return [proposal_segments(proposer, image, clusters) for image in images]


def proposal_segments(proposer: RegionProposer, image: SegmenterInput, clusters: ClusterSettings) -> Segments:
    """One image's masks as segments at the image's size (timings ``sam``, then ``regions``)."""
    with timed(image.timings, "sam"):
        proposals = proposer(image.rgb)
    fallback = None
    if clusters.uncovered == "fallback" and not proposals.masks.any(axis=0).all():
        [(cluster_map, cluster_ids)] = kmeans_segments([image.working], [image.patch_features()], clusters, [image.timings])
        fallback = resize_labels(cluster_ids[cluster_map], image.rgb.shape[:2])
    with timed(image.timings, "regions"):  # without a fallback map no pixel is uncovered, or they stay unlabelled
        regions = regions_from_masks(proposals, uncovered="fallback" if fallback is not None else "unlabelled", fallback=fallback)
    origins = [(int(p), float(proposals.scores[p]) if p >= 0 else None) for p in regions.proposal]
    return Segments(regions.label_map, np.arange(len(regions)), origins, regions.unlabelled, proposer)
