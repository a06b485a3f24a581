"""Per-stage wall-clock timings of one image (``Segmentation.timings``)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence

__all__ = ["timed", "timed_shared"]


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``timings[stage]``."""
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


@contextmanager
def timed_shared(timings: Sequence[dict[str, float]], stage: str) -> Iterator[None]:
    """Time the ``with`` block once, a step run for several images together, and add an equal share
    of it to each image's ``timings[stage]``."""
    shared: dict[str, float] = {}
    with timed(shared, stage):
        yield
    for image_timings in timings:
        image_timings[stage] = image_timings.get(stage, 0.0) + shared[stage] / len(timings)
