"""The local engine behind ``tagseg segment``: images, folders and globs in, per-image files and run files out.

:func:`segment_files` runs in this process: it plans the run and writes every file through
:mod:`tagseg.output_layout` (the layout every engine shares: names, resuming, failures, run
files), and segments the pending images with :func:`tagseg.stream.segment_stream`. It lives apart
from :mod:`tagseg.pipeline` because it owns files and folders, which the pipeline, the HTTP
service and notebook users do not need.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tagseg.config import TAGConfig, preset
from tagseg.exports import CategoryTable, ExportOptions
from tagseg.lazy_tag import LazyTAG
from tagseg.output_layout import (
    FAILURES_FILE,
    FORMATS,
    BatchReport,
    ImageJob,
    ImageOutcome,
    OutputLayout,
    RunFiles,
    failure_reason,
    plan_inputs,
)
from tagseg.progress import ProgressListener
from tagseg.stream import Streamed, segment_stream

if TYPE_CHECKING:
    from tagseg.pipeline import TAG

__all__ = ["FAILURES_FILE", "BatchListener", "BatchReport", "ImageOutcome", "segment_files"]


class BatchListener(ProgressListener):
    """Hooks :func:`segment_files` calls as it goes. Each reports through the
    :class:`~tagseg.progress.ProgressListener` hooks (which do nothing here): a progress listener
    that also subclasses this shows the images to segment; skipped ones leave the total."""

    _done = 0
    _total: int | None = None

    def started(self, total: int) -> None:
        """The inputs were expanded into ``total`` images (and failures of inputs that named none)."""
        self._done, self._total = 0, total
        self.begin("starting", total)

    def loading_models(self) -> None:
        """Models are about to load (only when some image needs segmenting)."""
        self.note("loading models")

    def image_started(self, path: Path) -> None:
        """``path`` is about to be segmented."""
        self.note(path.name[-40:])

    def image_finished(self, outcome: ImageOutcome) -> None:
        """One input is done, skipped or failed."""
        if outcome.status == "skipped" and self._total:
            self._total -= 1
        else:
            self._done += 1
        self.update(self._done, self._total)


def segment_files(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    config: TAGConfig | None = None,
    tag: "TAG | None" = None,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
    alpha: float = 0.5,
    listener: BatchListener | None = None,
    exports: Iterable[str] = (),
    categories: CategoryTable | None = None,
    export_options: ExportOptions = ExportOptions(),
    batch_size: int = 1,
    ahead: int = 1,
) -> BatchReport:
    """Segment image files, folders (recursively) and glob patterns, writing results under ``out_dir``.

    Per image: ``<name>.overlay.png``, ``<name>.labels.png`` and ``<name>.json`` (the chosen
    ``formats``), where ``<name>`` is the file's stem, or its path below a folder or glob root given
    as input (sub-folders are mirrored; names that would collide get a hash appended:
    :func:`tagseg.output_layout.plan_inputs`). Inputs that failed are listed in ``failures.jsonl``.
    The run's segments for every image with a JSON file, skipped ones included, go to
    ``results.coco.json`` (COCO with scores; ``file_name`` relative to ``export_options.image_root``,
    default the deepest folder holding every image).

    Images whose files all exist are skipped unless ``overwrite``. A bad image is recorded as
    failed and the batch goes on. Models are built once from ``config`` (default: the ``paper``
    preset), and only if some image needs segmenting; pass ``tag`` to reuse a built one. Errors
    that stop the whole run (models or database missing) raise :class:`TagsegError`.

    ``exports`` (from :data:`tagseg.exports.EXPORT_FORMATS`) also writes dataset formats under
    ``out_dir/export`` with one category table (``categories``, or a new one) for the run and
    ``export_options`` (minimum instance area, image root); skipped images are exported from their
    JSON files, and ``embeddings`` are written with each image's own files.

    Images are decoded and forwarded ``ahead`` batches ahead of the one being finished and written
    (:func:`tagseg.stream.segment_stream`), ``batch_size`` images per backbone forward; outputs,
    their order and resuming do not depend on either. An outcome's ``seconds`` is the wall time
    since the previous image finished.
    """
    started_at = time.perf_counter()
    listener = listener or BatchListener()
    layout = OutputLayout.create(out_dir, formats, exports)  # checks the formats before any model loads
    jobs, outcomes = plan_inputs(inputs, layout.out)
    listener.started(len(jobs) + len(outcomes))
    for outcome in outcomes:
        listener.image_finished(outcome)
    pending = [job for job in jobs if overwrite or not layout.finished(job.name)]
    models = LazyTAG(config or preset("paper"), tag)
    model_seconds = 0.0
    if pending and not models.built:
        listener.loading_models()
        loading = time.perf_counter()
        models.get()
        model_seconds = time.perf_counter() - loading
    pending_names = {job.name for job in pending}
    stream = segment_stream(models.get(), [job.path for job in pending], batch_size=batch_size, ahead=ahead) if pending else None
    try:
        with layout.run_files(categories, export_options) as run_files:
            last = time.perf_counter()
            for job in jobs:
                if job.name in pending_names:
                    listener.image_started(Path(job.path))
                    outcome = _write_one(next(stream), job, layout, alpha, run_files)  # type: ignore[arg-type]
                    now = time.perf_counter()
                    outcome.seconds, last = now - last, now
                else:
                    outcome = ImageOutcome(Path(job.path), "skipped", job.name, outputs=layout.image_files(job.name))
                    run_files.add_finished(job.name)
                outcomes.append(outcome)
                listener.image_finished(outcome)
    finally:
        if stream is not None:
            stream.close()
    layout.write_failures(outcomes)
    return BatchReport(outcomes, layout.out, model_seconds, time.perf_counter() - started_at)


def _write_one(streamed: Streamed[os.PathLike[str]], job: ImageJob, layout: OutputLayout, alpha: float, run_files: RunFiles) -> ImageOutcome:
    try:
        if streamed.error is not None:
            raise streamed.error
        result, rgb = streamed.result, streamed.rgb
        assert result is not None and rgb is not None
        paths = layout.write_image(rgb, result, job.path, job.name, alpha)
        paths += run_files.add(job.name, result, job.path)
    except Exception as error:  # noqa: BLE001 - one bad image must never stop the batch
        return ImageOutcome(Path(job.path), "failed", job.name, reason=failure_reason(error))
    return ImageOutcome(Path(job.path), "done", job.name, outputs=paths, labels=result.labels)
