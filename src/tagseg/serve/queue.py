"""A bounded inference queue: N worker threads, a fixed number of waiting places, no pile-up."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """Every worker is busy and every waiting place is taken."""


class InferenceQueue:
    """Runs blocking jobs on ``workers`` threads with at most ``queue_size`` more waiting.

    A job counts against the bound from submission until its thread finishes, also when the
    caller stopped waiting for it (a timed-out request still occupies its worker); a job that
    times out while still waiting is dropped and frees its place.
    """

    def __init__(self, workers: int, queue_size: int) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tagseg-worker")
        self._lock = threading.Lock()
        self._pending = 0
        self._running = 0

    @property
    def depth(self) -> int:
        """Jobs waiting for a worker."""
        with self._lock:
            return self._pending - self._running

    @property
    def running(self) -> int:
        """Jobs on a worker right now."""
        with self._lock:
            return self._running

    async def run(self, job: Callable[[], T], timeout: float) -> T:
        """Run ``job`` on a worker; :class:`QueueFull` when full, :class:`TimeoutError` after ``timeout`` s."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull()
            self._pending += 1
        try:
            future = self._executor.submit(self._tracked, job)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def _tracked(self, job: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        try:
            return job()
        finally:
            with self._lock:
                self._running -= 1

    def _release(self) -> None:
        """Free the place of a finished or cancelled job."""
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        """Stop taking jobs; running ones finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)
