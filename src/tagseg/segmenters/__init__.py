"""Stage 1, segment candidates: the segmenters, registered by the name the ``segmenter`` setting takes.

Every segmenter is a :class:`~tagseg.interfaces.Segmenter`: it takes a batch of forwarded images
(:class:`~tagseg.interfaces.SegmenterInput`) and returns their :class:`~tagseg.interfaces.Segments`,
which Stages 2 and 3 then pool and name whoever made them.

- ``kmeans`` (:mod:`tagseg.segmenters.kmeans`): the paper's k-means on the patch features, automatic k,
  the dense CRF and small-region merging;
- ``sam`` (:mod:`tagseg.segmenters.sam`): a region proposer's masks (Segment Anything), one label per
  pixel by :mod:`tagseg.segmenters.regions`, k-means for the pixels no mask covers.

:mod:`tagseg.segmenters.boxes` holds mask boxes and box NMS. A new segmenter is one module with a
:class:`~tagseg.interfaces.Segmenter` class and its :func:`register_segmenter` call below (its name
also joins ``SEGMENTER_NAMES`` in :mod:`tagseg.config`, which imports no torch). This module imports
no torch either: each segmenter's module loads when a pipeline first uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tagseg.errors import ConfigError

if TYPE_CHECKING:
    from tagseg.interfaces import RegionProposer, Segmenter

__all__ = ["SEGMENTERS", "ProposerSource", "SegmenterEntry", "register_segmenter", "segmenter_entry"]

ProposerSource = Callable[[], "RegionProposer"]
"""The pipeline's region proposer, loaded from ``sam_model`` on the first call (or the one it was given)."""


@dataclass(frozen=True)
class SegmenterEntry:
    """A registered segmenter: ``build(proposer)`` makes it (``proposer`` gives the pipeline's region
    proposer when called), ``models`` names the model settings it loads besides ``feature_model`` and
    ``clip_model`` (:mod:`tagseg.builder` loads them with the pipeline and lists them for ``tagseg models``)."""

    build: Callable[[ProposerSource], Segmenter]
    models: tuple[str, ...] = ()


SEGMENTERS: dict[str, SegmenterEntry] = {}
"""The segmenters by name, in the order the ``segmenter`` setting lists them."""


def register_segmenter(name: str, build: Callable[[ProposerSource], Segmenter], *, models: tuple[str, ...] = ()) -> None:
    """Make ``name`` a value of the ``segmenter`` setting, built by ``build`` (see :class:`SegmenterEntry`)."""
    if name in SEGMENTERS:
        raise ConfigError(f"A segmenter is already registered as {name!r}.")
    SEGMENTERS[name] = SegmenterEntry(build, models)


def segmenter_entry(name: str) -> SegmenterEntry:
    """The registered segmenter ``name``; :class:`~tagseg.errors.ConfigError` naming the choices otherwise."""
    if name not in SEGMENTERS:
        raise ConfigError(f"Unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}.")
    return SEGMENTERS[name]


def _kmeans(proposer: ProposerSource) -> Segmenter:
    from tagseg.segmenters.kmeans import KMeansSegmenter

    return KMeansSegmenter()


def _sam(proposer: ProposerSource) -> Segmenter:
    from tagseg.segmenters.sam import ProposalSegmenter

    return ProposalSegmenter(proposer)


register_segmenter("kmeans", _kmeans)
register_segmenter("sam", _sam, models=("sam_model",))
