"""What every engine offers (:class:`Engine`) and the worker settings engines with workers take.

An engine runs ``tagseg segment`` and ``tagseg db build`` somewhere (this process, a Ray cluster)
and writes the same files as every other engine: it plans and writes through
:mod:`tagseg.output_layout` and builds databases with :func:`tagseg.database.build_database`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from tagseg.errors import TagsegError
from tagseg.output_layout import BatchReport

if TYPE_CHECKING:
    from tagseg.database import BuildReport

__all__ = ["DatabaseBuild", "Engine", "WorkerOptions", "stored_texts"]


@dataclass(frozen=True)
class WorkerOptions:
    """The workers an engine spreads the work over: how many, what each reserves, which cluster.

    ``address`` is the cluster to join (for Ray: ``auto``, ``HOST:6379``, ``ray://HOST:10001``;
    None: ``$RAY_ADDRESS``, else a runtime started for the run). An engine without workers (the
    local one) takes only the defaults.
    """

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    address: str | None = None


@dataclass(frozen=True)
class DatabaseBuild:
    """A database build: what :func:`tagseg.database.build_database` reports, the wall time, the
    workers and the texts embedded by this run (a resumed build embeds only the rest)."""

    build: "BuildReport"
    seconds: float
    workers: int
    embedded: int

    @property
    def texts_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    @property
    def texts_per_second_per_worker(self) -> float:
        return self.texts_per_second / self.workers


class Engine(Protocol):
    """Where ``tagseg segment`` and ``tagseg db build`` run; made from :class:`WorkerOptions` (``engines.ENGINES``)."""

    def segment(
        self, inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], **options: Any
    ) -> BatchReport:
        """Segment ``inputs`` into ``out_dir``; ``options`` are :func:`tagseg.batch.segment_files`'s
        (``config``, ``formats``, ``overwrite``, ``alpha``, ``listener``, ``exports``, ``categories``,
        ``export_options``, ``batch_size``: images per backbone forward)."""
        ...

    def build_database(
        self, path: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], text_model: str, **options: Any
    ) -> DatabaseBuild:
        """Embed the texts of ``inputs`` with the text tower ``text_model`` into the database ``path``;
        ``options`` are :func:`tagseg.database.build_database`'s (``batch_size``: texts per encoder call,
        ``column``, ``template``, ``index``, ``resume``, ``overwrite``, ``progress``)."""
        ...


def stored_texts(path: str | os.PathLike[str]) -> int:
    """How many texts the database at ``path`` holds (0 when there is none yet): what a resumed build started from."""
    from tagseg.database.store import read_manifest

    try:
        return int(read_manifest(Path(path))["count"])
    except TagsegError:
        return 0
