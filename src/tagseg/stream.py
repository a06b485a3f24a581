"""Many images through one :class:`~tagseg.TAG`, the next ones decoded and forwarded while the current one finishes.

:func:`segment_stream` is the runner behind ``tagseg segment`` on files and folders
(:mod:`tagseg.batch`). A background thread decodes images and runs the backbone forwards
(:meth:`TAG.forward`, ``batch_size`` images per forward) up to ``ahead`` batches in advance; the
caller's thread finishes each forwarded batch at once (:meth:`TAG.finish_batch`: k-means, CRF,
naming; batched on the features' device with Stage 1's torch backends). Results come in
input order and are the same as ``tag(image)`` one at a time; a failing image becomes an
:class:`Streamed` with its ``error`` and the stream goes on.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np

from tagseg.result import Segmentation

if TYPE_CHECKING:
    from tagseg.pipeline import TAG, Forwarded

S = TypeVar("S")
T = TypeVar("T")

__all__ = ["Streamed", "segment_stream"]


@dataclass
class Streamed(Generic[S]):
    """One input's outcome: its decoded ``rgb`` and ``result``, or the ``error`` that stopped it."""

    source: S
    rgb: np.ndarray | None = None
    result: Segmentation | None = None
    error: Exception | None = None


@dataclass
class _Pending(Generic[S]):
    source: S
    rgb: np.ndarray | None = None
    forwarded: "Forwarded | None" = None
    error: Exception | None = None


def segment_stream(
    tag: "TAG",
    sources: Iterable[S],
    *,
    load: Callable[[S], np.ndarray] | None = None,
    batch_size: int = 1,
    ahead: int = 1,
) -> Iterator[Streamed[S]]:
    """Segment every source in order; ``load`` turns a source into an RGB array (default: a path or
    image decoded once, with the pipeline's own limits: :meth:`TAG.decode`).

    ``batch_size`` images of the same working size share one backbone forward (pays on a GPU; on a
    2-core CPU one image already fills the cores). ``ahead`` batches may be decoded and forwarded
    before the current one is finished; ``ahead=0`` runs everything in the caller's thread, in turn.
    """
    if batch_size < 1 or ahead < 0:
        raise ValueError(f"batch_size must be at least 1 and ahead at least 0, not {batch_size} and {ahead}")
    batches = _forwarded_batches(tag, sources, load or tag.decode, batch_size)
    if ahead:
        batches = _in_background(batches, ahead)
    try:
        for batch in batches:
            yield from _finished(tag, batch)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _finished(tag: "TAG", batch: list[_Pending[S]]) -> list[Streamed[S]]:
    """A forwarded batch finished in one :meth:`TAG.finish_batch` call; if that fails, image by
    image, so that the error lands on its own image."""
    ready = [item for item in batch if item.forwarded is not None]
    try:
        results = dict(zip(map(id, ready), tag.finish_batch([item.forwarded for item in ready])))
    except Exception:  # noqa: BLE001 - one bad image must never stop the stream
        results = {}
    return [_finished_alone(tag, item, results.get(id(item))) for item in batch]


def _finished_alone(tag: "TAG", item: _Pending[S], result: "Segmentation | None") -> Streamed[S]:
    """``item`` with its ``result`` from the batch, else finished by itself (or its error)."""
    if item.forwarded is None:
        return Streamed(item.source, item.rgb, error=item.error)
    if result is not None:
        return Streamed(item.source, item.rgb, result)
    try:
        return Streamed(item.source, item.rgb, tag.finish(item.forwarded))
    except Exception as error:  # noqa: BLE001 - one bad image must never stop the stream
        return Streamed(item.source, item.rgb, error=error)


def _forwarded_batches(
    tag: "TAG", sources: Iterable[S], load: Callable[[S], np.ndarray], batch_size: int
) -> Iterator[list[_Pending[S]]]:
    """Decode ``batch_size`` sources at a time and forward the decodable ones together.

    A failing batch is forwarded again image by image, so that the error lands on its own image.
    """
    batch: list[_Pending[S]] = []
    for source in sources:
        batch.append(_decoded(source, load))
        if len(batch) == batch_size:
            yield _forward(tag, batch)
            batch = []
    if batch:
        yield _forward(tag, batch)


def _decoded(source: S, load: Callable[[S], np.ndarray]) -> _Pending[S]:
    try:
        return _Pending(source, load(source))
    except Exception as error:  # noqa: BLE001
        return _Pending(source, error=error)


def _forward(tag: "TAG", batch: list[_Pending[S]]) -> list[_Pending[S]]:
    ready = [item for item in batch if item.rgb is not None]
    try:
        for item, forwarded in zip(ready, tag.forward([item.rgb for item in ready])):
            item.forwarded = forwarded
    except Exception as error:  # noqa: BLE001
        if len(ready) == 1:
            ready[0].error = error
        else:
            for item in ready:
                _forward(tag, [item])
    return batch


_DONE = object()


def _in_background(items: Iterator[T], ahead: int) -> Iterator[T]:
    """Run ``items`` in a daemon thread, at most ``ahead`` items before the consumer."""
    handoff: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            offer(error)
            return
        offer(_DONE)

    worker = threading.Thread(target=produce, name="tagseg-forward-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
