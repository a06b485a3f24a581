"""Where ``tagseg segment`` and ``tagseg db build`` run: one :class:`~tagseg.engines.base.Engine` protocol, a registry of engines.

``local`` (:mod:`tagseg.engines.local`) runs in this process and needs nothing more; ``ray``
(:mod:`tagseg.engines.ray`) spreads the same work over the workers of a Ray cluster and writes the
same files; it needs ``pip install -e '.[ray]'`` in the tagseg checkout. ``tagseg segment --engine NAME`` and
``tagseg db build --engine NAME`` make the engine with :func:`open_engine`.
"""

from __future__ import annotations

from typing import Callable

from tagseg.engines.base import DatabaseBuild, Engine, WorkerOptions
from tagseg.errors import ConfigError

__all__ = ["ENGINES", "DatabaseBuild", "Engine", "WorkerOptions", "open_engine"]


def _local(workers: WorkerOptions) -> Engine:
    from tagseg.engines.local import LocalEngine

    return LocalEngine(workers)


def _ray(workers: WorkerOptions) -> Engine:
    from tagseg.engines.ray import RayEngine

    return RayEngine(workers)


ENGINES: dict[str, Callable[[WorkerOptions], Engine]] = {"local": _local, "ray": _ray}
"""Engine name -> factory taking the worker options; a new engine is one entry here (``--engine`` offers its name)."""


def open_engine(name: str, workers: WorkerOptions = WorkerOptions()) -> Engine:
    """The engine registered as ``name``, with ``workers``; a :class:`ConfigError` for an unknown name
    (and the engine's own error when it cannot run here, e.g. Ray not installed)."""
    if name not in ENGINES:
        raise ConfigError(f"Unknown engine {name!r}. Choose from: {', '.join(ENGINES)}.")
    return ENGINES[name](workers)
