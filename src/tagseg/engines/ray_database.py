"""``tagseg db build --engine ray``: the local database builder with its embedding spread over Ray actors.

:class:`RayTextEncoder` is a :class:`~tagseg.interfaces.TextEncoder` whose ``encode`` sends chunks
of texts to actors that each hold the text tower once; :func:`build_database_with_ray` hands it to
the unchanged :func:`tagseg.database.build_database`, so the result (shards, manifest, atomic
commits, resume) is byte for byte the local build's. Ray itself: :mod:`tagseg.engines.ray_runtime`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from tagseg.config import preset
from tagseg.engines.base import DatabaseBuild, stored_texts
from tagseg.engines.ray_runtime import ray_runtime, require_ray
from tagseg.errors import ConfigError

__all__ = ["CHUNKS_PER_WORKER", "TASK_RETRIES", "RayTextEncoder", "build_database_with_ray"]

TASK_RETRIES = 3
"""Times a text chunk is retried after its actor died."""

CHUNKS_PER_WORKER = 4
"""Chunks per worker in each call from the builder: workers wait for the driver (reading, committing) once per call."""


class _TextEncoderWorker:
    """One Ray actor holding a text tower (built as ``tagseg db build`` builds it locally)."""

    def __init__(self, source: str, threads: int, device: str) -> None:
        import torch

        from tagseg.builder import text_encoder_for

        torch.set_num_threads(threads)
        self.encoder = text_encoder_for(source, preset("paper").replace(device=device))

    def describe(self) -> tuple[str, int]:
        return self.encoder.model_id, self.encoder.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts).numpy()


class RayTextEncoder:
    """A :class:`~tagseg.interfaces.TextEncoder` whose ``encode`` spreads texts over Ray actors.

    Each of ``workers`` actors loads the CLIP text tower ``source`` once; ``encode`` cuts its texts
    into chunks of ``chunk_size`` and returns their embeddings in input order. A dead actor is
    restarted and its chunk encoded again. Use inside :func:`ray_runtime`.
    """

    def __init__(
        self, source: str, *, workers: int = 1, chunk_size: int = 256, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0
    ) -> None:
        ray = require_ray()
        from ray.util import ActorPool

        if workers < 1 or chunk_size < 1:
            raise ConfigError("workers and the batch size must be at least 1.")
        actor = ray.remote(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=TASK_RETRIES
        )(_TextEncoderWorker)
        device = "cuda" if gpus_per_worker else "cpu"
        self.workers = [actor.remote(source, max(1, int(cpus_per_worker)), device) for _ in range(workers)]
        self.chunk_size = chunk_size
        self.model_id, self.dim = ray.get(self.workers[0].describe.remote())
        self._pool = ActorPool(self.workers)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        chunks = [list(texts[i : i + self.chunk_size]) for i in range(0, len(texts), self.chunk_size)]
        if not chunks:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(list(self._pool.map(lambda worker, chunk: worker.encode.remote(chunk), chunks)))


def build_database_with_ray(
    path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    text_model: str,
    *,
    workers: int = 1,
    batch_size: int = 256,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    **options: Any,
) -> DatabaseBuild:
    """:func:`tagseg.database.build_database` with the embedding spread over ``workers`` Ray actors.

    The database is the one the local build writes (same shards, manifest, checkpoints and
    ``resume``): the same texts are embedded in the same chunks of ``batch_size``. ``options``
    go to :func:`build_database` (``column``, ``template``, ``index``, ``resume``, ``overwrite``, ...).
    """
    from tagseg.database import build_database

    with ray_runtime(address):
        encoder = RayTextEncoder(
            text_model, workers=workers, chunk_size=batch_size, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker
        )
        before = stored_texts(path) if options.get("resume") else 0
        start = time.perf_counter()
        report = build_database(path, inputs, encoder, batch_size=batch_size * workers * CHUNKS_PER_WORKER, **options)
        seconds = time.perf_counter() - start
    return DatabaseBuild(report, seconds, workers, report.stored - before)
