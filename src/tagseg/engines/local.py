"""The local engine: ``tagseg segment`` and ``tagseg db build`` in this process (the default)."""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from tagseg.batch import segment_files
from tagseg.engines.base import DatabaseBuild, WorkerOptions, stored_texts
from tagseg.errors import ConfigError
from tagseg.output_layout import BatchReport

__all__ = ["LocalEngine"]


class LocalEngine:
    """:func:`tagseg.batch.segment_files` and :func:`tagseg.database.build_database` in this process.

    It has no workers: worker options other than the defaults are refused, so that a flag never
    silently does nothing.
    """

    def __init__(self, workers: WorkerOptions = WorkerOptions()) -> None:
        if workers != WorkerOptions():
            raise ConfigError(
                "--workers, --cpus-per-worker, --gpus-per-worker and --address choose the workers of an engine "
                "that has them: add --engine ray (the local engine runs in this process)."
            )

    def segment(self, inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], **options: Any) -> BatchReport:
        """:func:`tagseg.batch.segment_files` (see :meth:`tagseg.engines.base.Engine.segment`)."""
        return segment_files(inputs, out_dir, **options)

    def build_database(
        self, path: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], text_model: str, **options: Any
    ) -> DatabaseBuild:
        """:func:`tagseg.database.build_database` with the text tower ``text_model`` loaded here."""
        from tagseg.builder import text_encoder_for
        from tagseg.database import build_database

        encoder = text_encoder_for(text_model)
        before = stored_texts(path) if options.get("resume") else 0
        start = time.perf_counter()
        report = build_database(path, inputs, encoder, **options)
        return DatabaseBuild(report, time.perf_counter() - start, 1, report.stored - before)
