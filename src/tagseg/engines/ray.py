"""The Ray engine: ``tagseg segment`` and ``tagseg db build`` spread over the workers of a Ray cluster.

Segmentation runs as Ray Data batch inference: a pool of actors, each building the TAG (models and
database, the database memory-mapped read-only) once, segments its images with
:func:`tagseg.stream.segment_stream` (``batch_size`` images per backbone forward, as the local
engine) and writes every image's files with :meth:`tagseg.output_layout.OutputLayout.write_image`,
the local engine's code. The driver then writes the run files (``results.coco.json``, exports)
from the per-image JSON files, in input order, through the same layout, and a Parquet manifest
with one row per image (the failed ones are also listed in ``failures.jsonl``).

Exactly once: each output file is written beside its target and renamed over it, the JSON last,
and an image counts as finished when all its files exist. A re-run skips finished images. An actor
that dies is restarted and Ray runs its task again (without limit): a register that outlives the
workers (:class:`_Attempts`) hands back the rows of the images the dead attempt finished, the
images it was segmenting are tried again one at a time, so that a death is charged to one image,
and an image that :data:`TRIES_PER_IMAGE` workers died on while segmenting it alone becomes a
``failed`` row: no image can stall the run. A bad image is a ``failed`` row.

Database builds (:mod:`tagseg.engines.ray_database`) keep the local builder and only spread the
embedding over actors; both use :mod:`tagseg.engines.ray_runtime`.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from tagseg.batch import BatchListener
from tagseg.config import TAGConfig, preset
from tagseg.engines.base import DatabaseBuild, WorkerOptions
from tagseg.engines.ray_database import build_database_with_ray
from tagseg.engines.ray_runtime import ray_runtime, require_ray
from tagseg.errors import ConfigError, TagsegError
from tagseg.exports import ExportOptions
from tagseg.files import is_uri, write_bytes_atomically
from tagseg.lazy_tag import LazyTAG
from tagseg.output_layout import (
    FORMATS,
    IMAGE_EXPORTS,
    BatchReport,
    ImageOutcome,
    OutputLayout,
    failure_reason,
    plan_inputs,
)
from tagseg.stream import segment_stream

if TYPE_CHECKING:
    import pyarrow.fs
    import ray.data

    from tagseg.exports import CategoryTable
    from tagseg.pipeline import TAG

__all__ = [
    "FORWARDS_PER_TASK",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA",
    "TRIES_PER_IMAGE",
    "RayEngine",
    "segment_with_ray",
]

MANIFEST_FILE = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("name", pa.string()),
        ("status", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("reason", pa.string()),
        ("seconds", pa.float64()),
    ]
)
"""One row per input: status ``done``, ``skipped`` (finished before) or ``failed`` (with ``reason``);
``labels`` and ``scores`` of its segments, largest first; ``seconds`` spent segmenting it."""

FORWARDS_PER_TASK = 4
"""Backbone forwards' worth of images in one Ray task (``4 × batch_size`` images): larger amortises
scheduling, smaller redoes less when a worker dies."""

TRIES_PER_IMAGE = 2
"""Workers that may die while segmenting one image alone; then the image is a ``failed`` row and the run goes on."""

_STOPPED = "stopped"
"""The status of a worker's row that stops the run (never in the manifest): its reason is the error."""


class RayEngine:
    """The workers of a Ray cluster (``--engine ray``): :func:`segment_with_ray` and
    :func:`~tagseg.engines.ray_database.build_database_with_ray` with the given :class:`WorkerOptions`."""

    def __init__(self, workers: WorkerOptions = WorkerOptions()) -> None:
        require_ray()
        self.workers = workers

    def segment(self, inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], **options: Any) -> BatchReport:
        """:func:`segment_with_ray` (see :meth:`tagseg.engines.base.Engine.segment`)."""
        w = self.workers
        return segment_with_ray(
            inputs, out_dir, **options, workers=w.workers, cpus_per_worker=w.cpus_per_worker,
            gpus_per_worker=w.gpus_per_worker, address=w.address,
        )

    def build_database(
        self, path: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], text_model: str, **options: Any
    ) -> DatabaseBuild:
        """:func:`~tagseg.engines.ray_database.build_database_with_ray` (see :meth:`tagseg.engines.base.Engine.build_database`)."""
        w = self.workers
        return build_database_with_ray(
            path, inputs, text_model, workers=w.workers, cpus_per_worker=w.cpus_per_worker,
            gpus_per_worker=w.gpus_per_worker, address=w.address, **options,
        )


def segment_with_ray(
    inputs: "Iterable[str | os.PathLike[str]] | ray.data.Dataset",
    out_dir: str | os.PathLike[str],
    *,
    config: TAGConfig | None = None,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
    alpha: float = 0.5,
    listener: BatchListener | None = None,
    exports: Iterable[str] = (),
    categories: "CategoryTable | None" = None,
    export_options: ExportOptions = ExportOptions(),
    batch_size: int = 1,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    filesystem: "pyarrow.fs.FileSystem | None" = None,
) -> BatchReport:
    """:func:`tagseg.batch.segment_files` on Ray: the same per-image files and run files, plus ``manifest.parquet``.

    ``inputs`` are local files, folders and globs, or URIs that ``pyarrow.fs`` opens
    (``s3://bucket/photos/``, ``gs://...``, ``file:///...``; or paths on ``filesystem``), named as
    :func:`tagseg.output_layout.plan_inputs` names them; or a Ray Dataset with a ``path`` column and
    optionally ``name`` (output name, default: the path without its scheme) and ``bytes`` (the
    encoded image). ``out_dir`` must be a folder every worker can write to (a shared file system on
    a cluster).

    ``workers`` actors each take ``cpus_per_worker`` CPUs (their torch threads) and
    ``gpus_per_worker`` GPUs and segment ``batch_size`` images per backbone forward, in tasks of
    :data:`FORWARDS_PER_TASK` forwards. Errors that stop the whole run (models or database missing)
    raise :class:`TagsegError`.
    """
    started_at = time.perf_counter()
    ray = require_ray()
    listener = listener or BatchListener()
    if workers < 1 or batch_size < 1 or cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ConfigError("workers and batch_size must be at least 1, cpus_per_worker above 0, gpus_per_worker 0 or more.")
    layout = OutputLayout.create(out_dir, formats, exports)
    if ("coco" in layout.formats or layout.exports - IMAGE_EXPORTS) and "json" not in layout.formats:
        raise ConfigError(
            "The Ray engine writes results.coco.json and the exports from the per-image JSON files: "
            "add json to the formats, or use the local engine (--engine local)."
        )
    settings = _WorkerSettings(config or preset("paper"), layout, alpha, overwrite, filesystem, max(1, int(cpus_per_worker)), batch_size)
    rows: dict[str, dict[str, Any]] = {}  # output name -> manifest row
    outcomes: list[ImageOutcome] = []
    if isinstance(inputs, ray.data.Dataset):
        order: list[str] | None = None
        pending = inputs
        listener.started(0)
    else:
        jobs, outcomes = plan_inputs(inputs, layout.out, filesystem)
        order = [job.name for job in jobs]
        listener.started(len(jobs) + len(outcomes))
        for outcome in outcomes:
            listener.image_finished(outcome)
        todo = []
        for job in jobs:
            if overwrite or not layout.finished(job.name):
                todo.append({"path": str(job.path), "name": job.name})
            else:
                rows[job.name] = _finished_row(layout, str(job.path), job.name)
                listener.image_finished(_outcome(rows[job.name], layout))
        pending = todo or None
    if pending is not None:
        listener.loading_models()
        with ray_runtime(address):
            settings = replace(settings, attempts=ray.remote(num_cpus=0)(_Attempts).remote())
            images_per_task = batch_size * FORWARDS_PER_TASK
            if isinstance(pending, list):
                pending = ray.data.from_items(pending, override_num_blocks=_blocks(len(pending), images_per_task, workers))
            for row in _segment_on_workers(ray, pending, settings, workers, images_per_task, cpus_per_worker, gpus_per_worker):
                rows[row["name"]] = row
                outcome = _outcome(row, layout)
                if outcome.status != "skipped":
                    listener.image_started(outcome.path)
                listener.image_finished(outcome)
    names = order if order is not None else list(rows)
    outcomes += [_outcome(rows[name], layout) for name in names]
    _write_run_files(layout, [rows[name] for name in names], categories, export_options, [o for o in outcomes if not o.name])
    layout.write_failures(outcomes)
    return BatchReport(outcomes, layout.out, 0.0, time.perf_counter() - started_at)


def _segment_on_workers(
    ray: Any, dataset: "ray.data.Dataset", settings: "_WorkerSettings", workers: int, images_per_task: int,
    cpus_per_worker: float, gpus_per_worker: float,
) -> Iterator[dict[str, Any]]:
    """Manifest rows as the actor pool finishes them; raises the error of a worker that could not start."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller's listener shows progress
    results = dataset.map_batches(
        _SegmentWorker,
        fn_constructor_args=(settings,),
        batch_size=images_per_task,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
    )
    for row in results.iter_rows():
        if row["status"] == _STOPPED:
            raise TagsegError(row["reason"])
        yield {key: row[key] for key in MANIFEST_SCHEMA.names}


class _Attempts:
    """The run's register of images started and finished on the workers (one actor, outliving them).

    Ray runs the task of a worker that died again; the task then learns, per image, the row the
    dead attempt finished it with, or how often it was started (alone, and among other images in
    flight) without being finished: each such start is a worker that died.
    """

    def __init__(self) -> None:
        self.starts: dict[str, list[int]] = {}  # name -> [alone, among others]
        self.rows: dict[str, dict[str, Any]] = {}

    def look_up(self, names: list[str]) -> list[dict[str, Any] | list[int]]:
        return [self.rows.get(name, self.starts.get(name, [0, 0])) for name in names]

    def start(self, name: str, alone: bool) -> None:
        self.starts.setdefault(name, [0, 0])[0 if alone else 1] += 1

    def finish(self, row: dict[str, Any]) -> None:
        self.rows[row["name"]] = row


@dataclass(frozen=True)
class _WorkerSettings:
    config: TAGConfig
    layout: OutputLayout
    alpha: float
    overwrite: bool
    filesystem: Any
    threads: int
    batch_size: int
    attempts: Any = None  # the run's _Attempts actor


@dataclass(frozen=True)
class _Image:
    path: str
    name: str
    data: bytes | None  # the encoded image when the Dataset row carries it


class _SegmentWorker:
    """One Ray actor: builds the TAG on its first unfinished image, then segments task after task."""

    def __init__(self, settings: _WorkerSettings) -> None:
        import torch

        torch.set_num_threads(settings.threads)
        self.settings = settings
        self.models = LazyTAG(settings.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ray = require_ray()
        s = self.settings
        paths = batch.column("path").to_pylist()
        names = batch.column("name").to_pylist() if "name" in batch.column_names else [None] * batch.num_rows
        data = batch.column("bytes").to_pylist() if "bytes" in batch.column_names else [None] * batch.num_rows
        images = [_Image(path, name or _name_of(path), blob) for path, name, blob in zip(paths, names, data)]
        rows: dict[str, dict[str, Any]] = {}
        fresh: list[_Image] = []
        retried: list[_Image] = []
        for image, earlier in zip(images, ray.get(s.attempts.look_up.remote([image.name for image in images]))):
            if isinstance(earlier, dict):  # finished by an attempt whose worker died afterwards
                rows[image.name] = earlier
            elif not s.overwrite and s.layout.finished(image.name):  # finished before, or by a dead attempt
                rows[image.name] = _finished_row(s.layout, image.path, image.name, "done" if any(earlier) else "skipped")
            elif earlier[0] >= TRIES_PER_IMAGE:
                reason = f"the worker died while segmenting this image, {earlier[0]} tries"
                rows[image.name] = _row(image.path, image.name, "failed", reason=reason)
            else:
                (retried if any(earlier) else fresh).append(image)
        if fresh or retried:
            try:
                tag = self.models.get()
            except TagsegError as error:  # models or database missing: the driver stops the run with this
                return pa.Table.from_pylist([_row(i.path, i.name, _STOPPED, reason=str(error)) for i in images], schema=MANIFEST_SCHEMA)
            groups = [(fresh, s.batch_size)] + [([image], 1) for image in retried]  # one a worker died on: alone
            for group, batch_size in groups:
                rows.update((row["name"], row) for row in self._segment(ray, tag, group, batch_size))
        return pa.Table.from_pylist([rows[image.name] for image in images], schema=MANIFEST_SCHEMA)

    def _segment(self, ray: Any, tag: "TAG", images: list[_Image], batch_size: int) -> Iterator[dict[str, Any]]:
        """Rows of ``images`` segmented and written, each registered as started before it is decoded."""
        s = self.settings

        def registered(images: list[_Image]) -> Iterator[_Image]:
            for image in images:
                ray.get(s.attempts.start.remote(image.name, len(images) == 1))  # before it can kill the worker
                yield image

        def load(image: _Image) -> Any:
            return tag.decode(_open_image(image, s.filesystem))  # once, with the pipeline's own limits

        last = time.perf_counter()
        for streamed in segment_stream(tag, registered(images), load=load, batch_size=batch_size):
            image = streamed.source
            try:
                if streamed.error is not None:
                    raise streamed.error
                assert streamed.rgb is not None and streamed.result is not None
                s.layout.write_image(streamed.rgb, streamed.result, image.path, image.name, s.alpha)
                scores = [segment.score for segment in streamed.result.segments]
                row = _row(image.path, image.name, "done", streamed.result.labels, scores)
            except Exception as error:  # noqa: BLE001 - one bad image must never stop the run
                row = _row(image.path, image.name, "failed", reason=failure_reason(error))
            now = time.perf_counter()
            row["seconds"], last = now - last, now
            s.attempts.finish.remote(row)  # delivered before this worker's next call to the register
            yield row


def _row(
    path: str, name: str, status: str, labels: Sequence[str] = (), scores: Sequence[float] = (),
    reason: str | None = None, seconds: float = 0.0,
) -> dict[str, Any]:
    return {"path": path, "name": name, "status": status, "labels": list(labels), "scores": list(scores), "reason": reason, "seconds": seconds}


def _finished_row(layout: OutputLayout, path: str, name: str, status: str = "skipped") -> dict[str, Any]:
    """The manifest row of an image whose files exist: labels and scores from its JSON file when there is one."""
    try:
        segments = json.loads((layout.out / f"{name}.json").read_text(encoding="utf-8"))["segments"]
    except (OSError, ValueError, KeyError):
        segments = []
    return _row(path, name, status, [s["label"] for s in segments], [s["score"] for s in segments])


def _outcome(row: dict[str, Any], layout: OutputLayout) -> ImageOutcome:
    status = row["status"]
    outputs = layout.image_files(row["name"]) if status != "failed" else []
    labels = list(row["labels"]) if status == "done" else []
    return ImageOutcome(Path(row["path"]), status, row["name"], outputs, labels, row["reason"], row["seconds"])


def _open_image(image: _Image, filesystem: Any) -> Any:
    """What :func:`tagseg.image.load_image` reads: a local path as it is, else the bytes, named by the path."""
    blob = image.data
    if blob is None and filesystem is None and not is_uri(image.path):
        return image.path
    if blob is None:
        import pyarrow.fs

        fs, inner = (filesystem, image.path) if filesystem is not None else pyarrow.fs.FileSystem.from_uri(image.path)
        with fs.open_input_file(inner) as handle:
            blob = handle.read()
    stream = io.BytesIO(blob)
    stream.name = image.path  # load_image names the file in its errors
    return stream


def _name_of(path: str) -> str:
    """The output name of a Dataset row without one: its path without scheme, root or suffix."""
    inner = path.partition("://")[2] if is_uri(path) else path
    return Path(inner.lstrip("/")).with_suffix("").as_posix()


def _blocks(count: int, images_per_task: int, workers: int) -> int:
    """Blocks of the input list: several tasks per worker, so that a retried block redoes little."""
    return max(1, min(-(-count // images_per_task), workers * 64))


def _write_run_files(
    layout: OutputLayout, rows: list[dict[str, Any]], categories: "CategoryTable | None", options: ExportOptions,
    unplanned: list[ImageOutcome],
) -> None:
    """``results.coco.json`` and exports from the per-image JSON files (the local engine's code), then the manifest."""
    with layout.run_files(categories, options) as run_files:
        for row in rows:
            if row["status"] != "failed":
                run_files.add_finished(row["name"])
    failures = [_row(str(o.path), "", "failed", reason=o.reason) for o in unplanned]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(failures + rows, schema=MANIFEST_SCHEMA), buffer)
    write_bytes_atomically(layout.out / MANIFEST_FILE, buffer.getvalue())
