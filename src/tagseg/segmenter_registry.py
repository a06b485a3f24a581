"""The Stage-1 segmenters by name, without torch: what the ``segmenter`` setting may be.

The settings (:mod:`tagseg.config`) check ``segmenter`` against :data:`SEGMENTERS`; the segmenters
themselves live in :mod:`tagseg.segmenters`. A built-in segmenter is listed here by where its class
is, imported when a pipeline first builds it; one of your own is added with
:func:`register_segmenter` and is then a valid ``segmenter`` setting too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from tagseg.errors import ConfigError

if TYPE_CHECKING:
    from tagseg.interfaces import RegionProposer, Segmenter

__all__ = ["SEGMENTERS", "ProposerSource", "SegmenterEntry", "register_segmenter", "segmenter_entry"]

ProposerSource = Callable[[], "RegionProposer"]
"""The pipeline's region proposer, loaded from ``sam_model`` on the first call (or the one it was given)."""


@dataclass(frozen=True)
class SegmenterEntry:
    """A registered segmenter: ``maker`` is a class or function taking the pipeline's
    :data:`ProposerSource` (or ``"module:name"`` of one, imported on first use); ``models`` names the
    model settings it loads besides ``feature_model`` and ``clip_model`` (:mod:`tagseg.builder` loads
    them with the pipeline and lists them for ``tagseg models``)."""

    maker: Union[str, Callable[[ProposerSource], "Segmenter"]]
    models: tuple[str, ...] = ()

    def build(self, proposer: ProposerSource) -> "Segmenter":
        """The segmenter, given the source of the pipeline's region proposer (called only if it needs one)."""
        maker = self.maker
        if isinstance(maker, str):
            module, _, name = maker.partition(":")
            maker = getattr(importlib.import_module(module), name)
        return maker(proposer)


SEGMENTERS: dict[str, SegmenterEntry] = {
    "kmeans": SegmenterEntry("tagseg.segmenters:build_kmeans"),
    "sam": SegmenterEntry("tagseg.segmenters:build_sam", models=("sam_model",)),
}
"""The segmenters by name, in the order the ``segmenter`` setting lists them."""


def register_segmenter(
    name: str, maker: Callable[[ProposerSource], "Segmenter"], *, models: tuple[str, ...] = ()
) -> None:
    """Make ``name`` a value of the ``segmenter`` setting, built by ``maker`` (see :class:`SegmenterEntry`)."""
    if name in SEGMENTERS:
        raise ConfigError(f"A segmenter is already registered as {name!r}.")
    SEGMENTERS[name] = SegmenterEntry(maker, models)


def segmenter_entry(name: str) -> SegmenterEntry:
    """The registered segmenter ``name``; :class:`~tagseg.errors.ConfigError` naming the choices otherwise."""
    if name not in SEGMENTERS:
        raise ConfigError(f"Unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}.")
    return SEGMENTERS[name]
