"""The Ray engine: ``tagseg segment`` and ``tagseg db build`` spread over the workers of a Ray cluster.

Segmentation runs as Ray Data batch inference: a pool of actors, each building the TAG (models and
database, the database memory-mapped read-only) once, segments the images and writes every image's
files with :func:`tagseg.batch.write_image_outputs`, the code the local engine uses. The driver then
writes the run files (``results.coco.json``, exports) from the per-image JSON files, in input
order, with the local engine's code, and a Parquet manifest with one row per image (the failed
ones are also listed in ``failures.jsonl``, as the local engine lists them).

Exactly once: each output file is written beside its target and renamed over it, the JSON last,
and an image counts as finished when all its requested files exist. A re-run skips finished
images; an actor that dies is restarted and its unfinished images are segmented again (Ray retries
its tasks), overwriting nothing but their own partial files. A bad image is a ``failed`` row.

Database builds (:mod:`tagseg.engines.ray_database`) keep the local builder and only spread the
embedding over actors; they share :func:`ray_runtime` and :func:`require_ray` with this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from tagseg.batch import (
    FORMATS,
    IMAGE_SUFFIXES,
    BatchListener,
    BatchReport,
    ImageOutcome,
    _add_existing,
    _check_formats,
    _exporter,
    _Job,
    _outputs_exist,
    _per_image_paths,
    _plan,
    failure_reason,
    run_files,
    write_failures,
    write_image_outputs,
)
from tagseg.files import write_bytes_atomically
from tagseg.config import TAGConfig, preset
from tagseg.errors import ConfigError, TagsegError

if TYPE_CHECKING:
    import pyarrow.fs
    import ray.data

    from tagseg.exports import CategoryTable
    from tagseg.pipeline import TAG

__all__ = ["MANIFEST_FILE", "MANIFEST_SCHEMA", "ray_runtime", "require_ray", "segment_with_ray"]

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

TASK_RETRIES = 3
"""Times a text chunk is retried after its actor died (Ray Data retries image batches without limit)."""

CHUNKS_PER_WORKER = 4
"""Chunks per worker in each call from the builder: workers wait for the driver (reading, committing) once per call."""

_STOPPED = "stopped"
"""The status of a worker's row that stops the run (never in the manifest): its reason is the error."""

_NOT_INSTALLED = "The Ray engine needs Ray, which is not installed: pip install 'tagseg[ray]' (on every machine of the cluster)."


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`TagsegError` that says what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra
    except ImportError:
        raise TagsegError(_NOT_INSTALLED) from None
    return ray


@contextmanager
def ray_runtime(address: str | None = None) -> Iterator[Any]:
    """Use the Ray runtime already started in this process, else join ``address`` or start a local one.

    ``address`` is what ``ray.init`` takes (``auto``, ``ray://host:10001``, ``host:6379``); ``None``
    joins the cluster named by ``RAY_ADDRESS`` or starts a local runtime on this machine. A runtime
    started here is shut down on leaving.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------ segmentation


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
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_size: int = 4,
    address: str | None = None,
    filesystem: "pyarrow.fs.FileSystem | None" = None,
) -> BatchReport:
    """:func:`tagseg.batch.segment_files` on Ray: the same per-image files and run files, plus ``manifest.parquet``.

    ``inputs`` are local files, folders and globs (named as the local engine names them), URIs that
    ``pyarrow.fs`` opens (``s3://bucket/photos/``, ``gs://...``, ``file:///...``; or paths on
    ``filesystem``), or a Ray Dataset with a ``path`` column and optionally ``name`` (output name,
    default: the path without its scheme) and ``bytes`` (the encoded image). ``out_dir`` must be
    a folder every worker can write to (a shared file system on a cluster).

    ``workers`` actors each take ``cpus_per_worker`` CPUs (their torch threads) and
    ``gpus_per_worker`` GPUs, and segment ``batch_size`` images per task. Errors that stop the
    whole run (models or database missing) raise :class:`TagsegError`.
    """
    started_at = time.perf_counter()
    ray = require_ray()
    listener = listener or BatchListener()
    wanted = _check_formats(formats)
    if "embeddings" in set(exports):
        raise ConfigError(
            "The Ray engine writes exports from the per-image JSON files, which hold no embeddings: "
            "export embeddings with the local engine (--engine local)."
        )
    if workers < 1 or batch_size < 1 or cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ConfigError("workers and batch_size must be at least 1, cpus_per_worker above 0, gpus_per_worker 0 or more.")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot create the output folder {out}: {error.strerror or error}") from None
    exporter = _exporter(out, exports, categories)
    config = config or preset("paper")
    settings = _WorkerSettings(config, out, wanted, alpha, overwrite, filesystem, max(1, int(cpus_per_worker)))
    rows: dict[str, dict[str, Any]] = {}  # output name -> manifest row
    outcomes: list[ImageOutcome] = []
    if isinstance(inputs, ray.data.Dataset):
        order: list[str] | None = None
        pending = inputs
        listener.started(0)
    else:
        jobs, outcomes = _plan_inputs(inputs, out, filesystem)
        order = [job.name for job in jobs]
        listener.started(len(jobs) + len(outcomes))
        for outcome in outcomes:
            listener.image_finished(outcome)
        todo = []
        for job in jobs:
            if overwrite or not _outputs_exist(out, job.name, wanted):
                todo.append({"path": str(job.path), "name": job.name})
            else:
                rows[job.name] = _finished_row(out, str(job.path), job.name)
                listener.image_finished(_outcome(rows[job.name], out, wanted))
        pending = todo or None
    if pending is not None:
        listener.loading_models()
        with ray_runtime(address):
            if isinstance(pending, list):
                pending = ray.data.from_items(pending, override_num_blocks=_blocks(len(pending), batch_size, workers))
            for row in _segment_on_workers(ray, pending, settings, workers, batch_size, cpus_per_worker, gpus_per_worker):
                rows[row["name"]] = row
                outcome = _outcome(row, out, wanted)
                if outcome.status != "skipped":
                    listener.image_started(outcome.path)
                listener.image_finished(outcome)
    names = order if order is not None else list(rows)
    outcomes += [_outcome(rows[name], out, wanted) for name in names]
    _write_run_files(out, [rows[name] for name in names], wanted, exporter, [o for o in outcomes if not o.name])
    write_failures(out, outcomes)
    return BatchReport(outcomes, out, 0.0, time.perf_counter() - started_at)


def _segment_on_workers(
    ray: Any, dataset: "ray.data.Dataset", settings: "_WorkerSettings", workers: int, batch_size: int,
    cpus_per_worker: float, gpus_per_worker: float,
) -> Iterator[dict[str, Any]]:
    """Manifest rows as the actor pool finishes them; raises the error of a worker that could not start."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller's listener shows progress
    results = dataset.map_batches(
        _SegmentWorker,
        fn_constructor_args=(settings,),
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
    )
    for row in results.iter_rows():
        if row["status"] == _STOPPED:
            raise TagsegError(row["reason"])
        yield {key: row[key] for key in MANIFEST_SCHEMA.names}


@dataclass(frozen=True)
class _WorkerSettings:
    config: TAGConfig
    out: Path
    wanted: frozenset[str]
    alpha: float
    overwrite: bool
    filesystem: Any
    threads: int


class _SegmentWorker:
    """One Ray actor: builds the TAG on its first unfinished image, then segments batch after batch."""

    def __init__(self, settings: _WorkerSettings) -> None:
        import torch

        torch.set_num_threads(settings.threads)
        self.settings = settings
        self.tag: "TAG | None" = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        names = batch.column("name").to_pylist() if "name" in batch.column_names else [None] * batch.num_rows
        data = batch.column("bytes").to_pylist() if "bytes" in batch.column_names else [None] * batch.num_rows
        rows = [self._one(path, name or _name_of(path), blob) for path, name, blob in zip(batch.column("path").to_pylist(), names, data)]
        return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)

    def _one(self, path: str, name: str, blob: bytes | None) -> dict[str, Any]:
        s = self.settings
        if not s.overwrite and _outputs_exist(s.out, name, s.wanted):
            return _finished_row(s.out, path, name)
        if self.tag is None:
            from tagseg.pipeline import TAG

            try:
                self.tag = TAG.from_pretrained(s.config)
            except TagsegError as error:  # models or database missing: the driver stops the run with this
                return _row(path, name, _STOPPED, reason=str(error))
        start = time.perf_counter()
        try:
            image = _open_image(path, blob, s.filesystem)
            result, _ = write_image_outputs(self.tag, image, path, name, s.out, s.wanted, s.alpha)
        except Exception as error:  # noqa: BLE001 - one bad image must never stop the run
            return _row(path, name, "failed", reason=failure_reason(error), seconds=time.perf_counter() - start)
        scores = [segment.score for segment in result.segments]
        return _row(path, name, "done", result.labels, scores, seconds=time.perf_counter() - start)


def _row(
    path: str, name: str, status: str, labels: Sequence[str] = (), scores: Sequence[float] = (),
    reason: str | None = None, seconds: float = 0.0,
) -> dict[str, Any]:
    return {"path": path, "name": name, "status": status, "labels": list(labels), "scores": list(scores), "reason": reason, "seconds": seconds}


def _finished_row(out: Path, path: str, name: str) -> dict[str, Any]:
    """The manifest row of an image finished before: labels and scores from its JSON file when there is one."""
    try:
        segments = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))["segments"]
    except (OSError, ValueError, KeyError):
        segments = []
    return _row(path, name, "skipped", [s["label"] for s in segments], [s["score"] for s in segments])


def _outcome(row: dict[str, Any], out: Path, wanted: frozenset[str]) -> ImageOutcome:
    status = row["status"]
    outputs = _per_image_paths(out, row["name"], wanted) if status != "failed" else []
    labels = list(row["labels"]) if status == "done" else []
    return ImageOutcome(Path(row["path"]), status, row["name"], outputs, labels, row["reason"], row["seconds"])


def _open_image(path: str, blob: bytes | None, filesystem: Any) -> Any:
    """What :func:`tagseg.image.load_image` reads: a local path as it is, else the bytes, named by ``path``."""
    if blob is None and filesystem is None and not _is_uri(path):
        return path
    if blob is None:
        import pyarrow.fs

        fs, inner = (filesystem, path) if filesystem is not None else pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_input_file(inner) as handle:
            blob = handle.read()
    stream = io.BytesIO(blob)
    stream.name = path  # load_image names the file in its errors
    return stream


def _is_uri(text: str) -> bool:
    scheme, separator, _ = text.partition("://")
    return bool(separator) and scheme.isidentifier()


def _name_of(path: str) -> str:
    """The output name of a Dataset row without one: its path without scheme, root or suffix."""
    inner = path.partition("://")[2] if _is_uri(path) else path
    return Path(inner.lstrip("/")).with_suffix("").as_posix()


def _plan_inputs(
    inputs: Iterable[str | os.PathLike[str]], out: Path, filesystem: Any
) -> tuple[list[_Job], list[ImageOutcome]]:
    """Local inputs planned as the local engine plans them; URIs (or paths on ``filesystem``) listed with pyarrow."""
    items = [os.fspath(item) for item in inputs]
    remote = [item for item in items if filesystem is not None or _is_uri(item)]
    jobs, failures = _plan([item for item in items if item not in remote], out)
    taken = {job.name.casefold() for job in jobs}
    for item in remote:
        found = list(_list_remote(item, filesystem))
        if not found:
            failures.append(ImageOutcome(Path(item), "failed", reason=f"{item}: no such file or folder, or it holds no images"))
        for path, name in found:
            unique = name if name.casefold() not in taken else f"{name}-{_short_hash(path)}"
            taken.add(unique.casefold())
            jobs.append(_Job(path, unique))  # type: ignore[arg-type] - a URI, kept as text
    return jobs, failures


def _list_remote(item: str, filesystem: Any) -> Iterator[tuple[str, str]]:
    """(URI or path, output name) of the image ``item`` names, or of the images below the folder it names."""
    import pyarrow.fs

    fs, root = (filesystem, item) if filesystem is not None else pyarrow.fs.FileSystem.from_uri(item)
    prefix = item[: item.find(root.rstrip("/"))] if filesystem is None else ""  # scheme (and host) of the URI
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.File:
        yield item, Path(root).stem
    elif info.type == pyarrow.fs.FileType.Directory:
        selector = pyarrow.fs.FileSelector(root.rstrip("/"), recursive=True)
        for entry in sorted(fs.get_file_info(selector), key=lambda e: e.path):
            relative = Path(entry.path).relative_to(root.rstrip("/"))
            hidden = any(part.startswith(".") for part in relative.parts)
            if entry.type == pyarrow.fs.FileType.File and not hidden and relative.suffix.lower() in IMAGE_SUFFIXES:
                yield prefix + entry.path, relative.with_suffix("").as_posix()


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _blocks(count: int, batch_size: int, workers: int) -> int:
    """Blocks of the input list: several batches per worker, so that a retried block redoes little."""
    return max(1, min(-(-count // batch_size), workers * 64))


def _write_run_files(
    out: Path, rows: list[dict[str, Any]], wanted: frozenset[str], exporter: Any, unplanned: list[ImageOutcome]
) -> None:
    """``results.coco.json`` and exports from the per-image JSON files (the local engine's code), then the manifest."""
    with run_files(out, wanted, exporter) as run_file:
        for row in rows:
            if row["status"] != "failed":
                _add_existing(out / f"{row['name']}.json", row["name"], run_file, exporter)
    failures = [_row(str(o.path), "", "failed", reason=o.reason) for o in unplanned]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(failures + rows, schema=MANIFEST_SCHEMA), buffer)
    write_bytes_atomically(out / MANIFEST_FILE, buffer.getvalue())
