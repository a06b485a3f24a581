"""The batch runner behind ``tagseg segment``: images, folders and globs in; per-image files and run files out.

:func:`segment_files` names the outputs (mirroring sub-folders, resolving collisions), skips
images whose outputs exist (so an interrupted run resumes), records failures without stopping,
and writes the run's ``results.coco.json`` and the dataset exports as images come. It lives apart
from :mod:`tagseg.pipeline` because it owns files and folders, which the pipeline, the HTTP
service and notebook users do not need.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal

import numpy as np
from PIL.PngImagePlugin import PngInfo

from tagseg.config import TAGConfig, preset
from tagseg.errors import ConfigError, TagsegError
from tagseg.exports import RESULTS_FILE, CategoryTable, CocoWriter, ExportOptions, RunExporter
from tagseg.files import remove_interrupted_writes, write_bytes_atomically
from tagseg.image import ImageSource
from tagseg.progress import ProgressListener
from tagseg.render import label_image, overlay
from tagseg.result import Segmentation
from tagseg.stream import Streamed, segment_stream

if TYPE_CHECKING:
    from tagseg.pipeline import TAG

__all__ = [
    "BatchListener",
    "BatchReport",
    "FAILURES_FILE",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "ImageOutcome",
    "segment_files",
    "write_failures",
]

FORMATS = ("overlay", "labels", "json", "coco")
"""Output formats: per image ``<name>.overlay.png``, ``<name>.labels.png``, ``<name>.json``; per run ``results.coco.json``."""

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif"}
)
"""File endings that folder and glob inputs pick up; files named one by one may have any ending."""

FAILURES_FILE = "failures.jsonl"
"""The run file listing the inputs that failed, one JSON object a line: ``path``, ``name``, ``reason``."""

_PER_IMAGE_SUFFIX = {"overlay": ".overlay.png", "labels": ".labels.png", "json": ".json"}
_GLOB_CHARS = frozenset("*?[")


@dataclass
class ImageOutcome:
    """What happened to one input: ``done``, ``skipped`` (outputs existed) or ``failed`` (with ``reason``)."""

    path: Path
    status: Literal["done", "skipped", "failed"]
    name: str = ""
    outputs: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    reason: str | None = None
    seconds: float = 0.0


@dataclass
class BatchReport:
    """Every input's outcome, in input order, plus the time spent loading models and in total."""

    outcomes: list[ImageOutcome]
    out_dir: Path
    model_seconds: float = 0.0
    total_seconds: float = 0.0

    def _with(self, status: str) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[ImageOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[ImageOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[ImageOutcome]:
        return self._with("failed")

    @property
    def seconds_per_image(self) -> float | None:
        """Mean wall time per segmented image (model loading excluded); None when none was segmented."""
        done = self.done
        return sum(o.seconds for o in done) / len(done) if done else None

    @property
    def ok(self) -> bool:
        return not self.failed


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


@dataclass
class _Job:
    path: Path
    name: str  # output path relative to the output folder, without suffix


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

    Per image: ``<name>.overlay.png``, ``<name>.labels.png`` and ``<name>.json``, where ``<name>``
    is the file's stem, or its path below a folder or glob root given as input (sub-folders are
    mirrored). Inputs that failed are listed in ``failures.jsonl`` (:func:`write_failures`).
    Names that would collide (``a.jpg`` and ``a.png``, the same stem in two folders) get
    ``-<8 hex digits of the file's absolute path hash>`` appended. The run's segments for every image
    with a JSON file, skipped ones included, go to ``results.coco.json`` (COCO with scores).

    Images whose requested outputs all exist are skipped unless ``overwrite``. A bad image is
    recorded as failed and the batch goes on. Models are built once from ``config`` (default: the
    ``paper`` preset), and only if some image needs segmenting; pass ``tag`` to reuse a built one.
    Errors that stop the whole run (models or database missing) raise :class:`TagsegError`.

    ``exports`` (from :data:`tagseg.exports.EXPORT_FORMATS`) also writes dataset formats under
    ``out_dir/export`` with one category table (``categories``, or a new one) for the run and
    ``export_options`` (minimum instance area, image root); skipped images are exported from their
    JSON files (no embeddings for them).

    Images are decoded and forwarded ``ahead`` batches ahead of the one being finished and written
    (:func:`tagseg.stream.segment_stream`), ``batch_size`` images per backbone forward; outputs,
    their order and resuming do not depend on either. An outcome's ``seconds`` is the wall time
    since the previous image finished.
    """
    started_at = time.perf_counter()
    listener = listener or BatchListener()
    wanted = _check_formats(formats)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot create the output folder {out}: {error.strerror or error}") from None
    exporter = _exporter(out, exports, categories, export_options)  # checks the export formats before any model loads
    jobs, outcomes = _plan(inputs, out)
    listener.started(len(jobs) + len(outcomes))
    for outcome in outcomes:
        listener.image_finished(outcome)
    pending = [job for job in jobs if overwrite or not _outputs_exist(out, job.name, wanted)]
    model_seconds = 0.0
    if pending and tag is None:
        listener.loading_models()
        loading = time.perf_counter()
        from tagseg.pipeline import TAG

        tag = TAG.from_pretrained(config or preset("paper"))
        model_seconds = time.perf_counter() - loading
    pending_names = {job.name for job in pending}
    stream = segment_stream(tag, [job.path for job in pending], batch_size=batch_size, ahead=ahead) if tag is not None else None
    try:
        with run_files(out, wanted, exporter) as run_file:
            last = time.perf_counter()
            for job in jobs:
                if job.name in pending_names:
                    listener.image_started(job.path)
                    outcome = _write_one(next(stream), job, out, wanted, alpha, run_file, exporter)  # type: ignore[arg-type]
                    now = time.perf_counter()
                    outcome.seconds, last = now - last, now
                else:
                    outcome = ImageOutcome(job.path, "skipped", job.name, outputs=_per_image_paths(out, job.name, wanted))
                    _add_existing(out / f"{job.name}.json", job.name, run_file, exporter)
                outcomes.append(outcome)
                listener.image_finished(outcome)
    finally:
        if stream is not None:
            stream.close()
    write_failures(out, outcomes)
    return BatchReport(outcomes, out, model_seconds, time.perf_counter() - started_at)


@contextmanager
def run_files(out: Path, wanted: frozenset[str], exporter: RunExporter | None) -> Iterator[CocoWriter | None]:
    """The run's ``results.coco.json`` writer (None without ``coco`` in ``wanted``) for the block to feed;
    it and ``exporter`` are finished when the block ends normally having fed it some image (a run in
    which every image failed writes neither), and the spool is dropped either way."""
    run_file = CocoWriter.for_run(out) if "coco" in wanted else None
    try:
        yield run_file
        if run_file is not None and run_file.images:
            run_file.finish()
        if exporter is not None and (run_file is None or run_file.images):
            exporter.finish()
    finally:
        if run_file is not None:
            run_file.close()


def write_failures(out: Path, outcomes: Iterable[ImageOutcome]) -> Path | None:
    """List the failed ``outcomes`` in ``out/failures.jsonl`` (atomically), in input order; returns its path.

    One JSON object a line: ``path`` (the input as given), ``name`` (its output name, empty when the
    input named no image) and ``reason``. Each run rewrites the file for its own inputs, so a resumed
    run that fixed them removes it (None is returned when nothing failed).
    """
    path = out / FAILURES_FILE
    lines = [
        json.dumps({"path": str(o.path), "name": o.name, "reason": o.reason}, ensure_ascii=False) + "\n"
        for o in outcomes if o.status == "failed"
    ]
    if not lines:
        path.unlink(missing_ok=True)
        return None
    write_bytes_atomically(path, "".join(lines).encode("utf-8"))
    return path


def _check_formats(formats: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(formats)
    unknown = wanted - set(FORMATS)
    if unknown or not wanted:
        raise ConfigError(
            f"Unknown output format(s): {', '.join(sorted(unknown)) or '(none given)'}. Choose from: {', '.join(FORMATS)}."
        )
    return wanted


def _per_image_paths(out: Path, name: str, wanted: frozenset[str]) -> list[Path]:
    return [out / f"{name}{suffix}" for fmt, suffix in _PER_IMAGE_SUFFIX.items() if fmt in wanted]


def _outputs_exist(out: Path, name: str, wanted: frozenset[str]) -> bool:
    paths = _per_image_paths(out, name, wanted)
    return bool(paths) and all(path.is_file() for path in paths)


def _exporter(
    out: Path, exports: Iterable[str], categories: CategoryTable | None, options: ExportOptions = ExportOptions()
) -> RunExporter | None:
    formats = list(exports)
    return RunExporter(out / "export", formats, categories, options) if formats else None


def _add_existing(path: Path, name: str, run_file: CocoWriter | None, exporter: RunExporter | None) -> None:
    """A skipped image's earlier result, read from its JSON file, into the run file and the exports
    (no embeddings: the file has none); a missing or unreadable file is left out."""
    if run_file is None and exporter is None:
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        result, image_path = Segmentation.from_record(record), record["image"].get("path", "")
    except (OSError, ValueError, KeyError, TypeError):
        return
    if run_file is not None:
        run_file.add(name, result, image_path)
    if exporter is not None:
        exporter.add(name, result, image_path, formats=exporter.formats - {"embeddings"})


def _write_one(
    streamed: Streamed[Path], job: _Job, out: Path, wanted: frozenset[str], alpha: float, run_file: CocoWriter | None,
    exporter: RunExporter | None,
) -> ImageOutcome:
    try:
        if streamed.error is not None:
            raise streamed.error
        result, rgb = streamed.result, streamed.rgb
        assert result is not None and rgb is not None
        paths = write_result_outputs(rgb, result, job.path, job.name, out, wanted, alpha)
        if run_file is not None:
            run_file.add(job.name, result, job.path)
        if exporter is not None:
            paths += exporter.add(job.name, result, job.path)
    except Exception as error:  # noqa: BLE001 - one bad image must never stop the batch
        return ImageOutcome(job.path, "failed", job.name, reason=failure_reason(error))
    return ImageOutcome(job.path, "done", job.name, outputs=paths, labels=result.labels)


def write_image_outputs(
    tag: "TAG", image: ImageSource, image_path: str | Path, name: str, out: Path, wanted: frozenset[str], alpha: float
) -> tuple[Segmentation, list[Path]]:
    """Segment ``image`` and write its per-image outputs ``out/<name>.*``, each atomically, the JSON last.

    The Ray engine (:mod:`tagseg.engines.ray`) calls this; the local runner streams its images and
    writes through :func:`write_result_outputs`, as this does, so one image gives the same files
    whichever engine runs it. Returns the result and the files written; the JSON names ``image_path``.
    """
    rgb = tag.decode(image)
    result = tag(rgb)  # the decoded array as it is: no second decode, no copy
    return result, write_result_outputs(rgb, result, image_path, name, out, wanted, alpha)


def write_result_outputs(
    rgb: np.ndarray, result: Segmentation, image_path: str | Path, name: str, out: Path, wanted: frozenset[str], alpha: float
) -> list[Path]:
    """Write one segmented image's outputs ``out/<name>.*``, each atomically, the JSON last; returns their paths.

    Temporary files an interrupted earlier write of these outputs left (a killed run or worker)
    are removed first: the image is being written again, by this call alone.
    """
    paths = _per_image_paths(out, name, wanted)
    for path in paths:
        remove_interrupted_writes(path)
    if "overlay" in wanted:
        _write_png(overlay(rgb, result, alpha=alpha), out / f"{name}.overlay.png")
    if "labels" in wanted:
        _write_png(label_image(result), out / f"{name}.labels.png", labels=result.labels)
    if "json" in wanted:
        record = result.to_record(image_path)
        write_bytes_atomically(out / f"{name}.json", json.dumps(record, indent=1).encode("utf-8"))
    return paths


def failure_reason(error: Exception) -> str:
    """How a failed image is reported: a tagseg error's own message, else the exception's type and message."""
    return str(error) if isinstance(error, TagsegError) else f"{type(error).__name__}: {error}"


def _write_png(image: Any, path: Path, labels: list[str] | None = None) -> None:
    """Save a PNG atomically, with the segment names as an ``tagseg:labels`` text chunk when given."""
    info = PngInfo()
    if labels is not None:
        info.add_itxt("tagseg:labels", json.dumps(labels, ensure_ascii=False))
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    write_bytes_atomically(path, buffer.getvalue())


# ----------------------------------------------------------------------------- inputs


def _plan(inputs: Iterable[str | Path], out: Path) -> tuple[list[_Job], list[ImageOutcome]]:
    """Expand inputs into jobs with unique output names; inputs that name no image become failures."""
    out_resolved = out.resolve()
    found: dict[Path, tuple[Path, str]] = {}  # resolved path -> (path as found, relative name)
    failures: list[ImageOutcome] = []
    for item in inputs:
        text = str(item)
        matches = list(_expand(text, out_resolved))
        if not matches:
            reason = _why_nothing(text)
            failures.append(ImageOutcome(Path(text), "failed", reason=reason))
        for path, name in matches:
            found.setdefault(path.resolve(), (path, name))
    counts: dict[str, int] = {}
    for _, name in found.values():
        counts[name.casefold()] = counts.get(name.casefold(), 0) + 1
    reserved = Path(RESULTS_FILE).stem.casefold()
    jobs = []
    for resolved, (path, name) in found.items():
        if counts[name.casefold()] > 1 or name.casefold() == reserved:
            name = f"{name}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
        jobs.append(_Job(path, name))
    return jobs, failures


def _why_nothing(text: str) -> str:
    path = Path(text)
    if path.is_dir():
        return f"{text}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
    if _GLOB_CHARS & set(text):
        return f"{text}: the pattern matches no images"
    return f"{text}: no such file or folder"


def _expand(text: str, out_resolved: Path) -> Iterator[tuple[Path, str]]:
    """(image path, output name) pairs named by one input: a file, a folder or a glob pattern."""
    path = Path(text)
    if path.is_file():
        yield path, path.stem
    elif path.is_dir():
        yield from _walk(path, path, out_resolved)
    elif _GLOB_CHARS & set(text):
        root = _glob_root(text)
        for match in sorted(glob.glob(text, recursive=True)):
            candidate = Path(match)
            if candidate.is_dir():
                yield from _walk(candidate, root, out_resolved)
            elif candidate.suffix.lower() in IMAGE_SUFFIXES and not _inside(candidate, out_resolved):
                yield candidate, _relative_name(candidate, root)


def _walk(folder: Path, root: Path, out_resolved: Path) -> Iterator[tuple[Path, str]]:
    """Images below ``folder`` in sorted order, skipping hidden entries and the output folder."""
    for current, dirs, files in os.walk(folder):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(here / d, out_resolved))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield here / name, _relative_name(here / name, root)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern starts from: its parts before the first one with a wildcard."""
    parts = Path(pattern).parts
    static = parts[: next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))]
    return Path(*static) if static else Path(".")


def _relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()
