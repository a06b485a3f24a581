"""The output folder of ``tagseg segment``, one layout for every engine.

:func:`plan_inputs` expands the inputs (files, folders, globs, URIs) into :class:`ImageJob` s with
unique output names. :class:`OutputLayout` says which files an image gets and whether it is
finished, writes them (:meth:`OutputLayout.write_image`) and writes the run files: the run's
``results.coco.json`` and ``--export`` formats (:meth:`OutputLayout.run_files`) and
``failures.jsonl`` (:meth:`OutputLayout.write_failures`). The local engine (:mod:`tagseg.batch`)
and the Ray engine (:mod:`tagseg.engines.ray`) both run on it, so a folder reads the same
whichever engine made it, and either resumes the other's run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from PIL.PngImagePlugin import PngInfo

from tagseg.errors import ConfigError, TagsegError
from tagseg.exports import RESULTS_FILE, CategoryTable, CocoWriter, ExportOptions, RunExporter, check_export_formats, read_result
from tagseg.exports.embeddings import EmbeddingsWriter
from tagseg.files import is_glob_pattern, is_uri, remove_interrupted_writes, write_bytes_atomically
from tagseg.render import label_image, overlay
from tagseg.result import Segmentation

__all__ = [
    "FAILURES_FILE",
    "FORMATS",
    "IMAGE_EXPORTS",
    "IMAGE_SUFFIXES",
    "BatchReport",
    "ImageJob",
    "ImageOutcome",
    "OutputLayout",
    "RunFiles",
    "failure_reason",
    "plan_inputs",
]

FORMATS = ("overlay", "labels", "json", "coco")
"""Output formats: per image ``<name>.overlay.png``, ``<name>.labels.png``, ``<name>.json``; per run ``results.coco.json``."""

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif"}
)
"""File endings that folder and glob inputs pick up; files named one by one may have any ending."""

FAILURES_FILE = "failures.jsonl"
"""The run file listing the inputs that failed, one JSON object a line: ``path``, ``name``, ``reason``."""

IMAGE_EXPORTS = frozenset({"embeddings"})
"""Export formats written with an image's own files, from the segmentation in memory (the per-image
JSON does not hold them), and counted in whether the image is finished."""

_PER_IMAGE_SUFFIX = {"overlay": ".overlay.png", "labels": ".labels.png", "json": ".json"}


@dataclass(frozen=True)
class ImageJob:
    """One image to segment: its ``path`` as given (a local :class:`~pathlib.Path` or a URI) and its
    output ``name``, relative to the output folder and without suffix."""

    path: Path | str
    name: str


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


def failure_reason(error: Exception) -> str:
    """How a failed image is reported: a tagseg error's own message, else the exception's type and message."""
    return str(error) if isinstance(error, TagsegError) else f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class OutputLayout:
    """The files of one run's output folder ``out``: per image the chosen ``formats`` (and the
    :data:`IMAGE_EXPORTS` among ``exports``), per run ``results.coco.json``, the exports and the failures."""

    out: Path
    formats: frozenset[str] = frozenset(FORMATS)
    exports: frozenset[str] = frozenset()

    @classmethod
    def create(cls, out_dir: str | os.PathLike[str], formats: Iterable[str] = FORMATS, exports: Iterable[str] = ()) -> "OutputLayout":
        """Check ``formats`` and ``exports`` and create the folder; a :class:`ConfigError` says what is wrong."""
        wanted = frozenset(formats)
        unknown = wanted - set(FORMATS)
        if unknown or not wanted:
            raise ConfigError(
                f"Unknown output format(s): {', '.join(sorted(unknown)) or '(none given)'}. Choose from: {', '.join(FORMATS)}."
            )
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"Cannot create the output folder {out}: {error.strerror or error}") from None
        return cls(out, wanted, check_export_formats(exports))

    @property
    def export_dir(self) -> Path:
        """Where the ``--export`` formats go."""
        return self.out / "export"

    def image_files(self, name: str) -> list[Path]:
        """The files image ``name`` gets, the JSON (when chosen) last."""
        paths = [self.export_dir / fmt / f"{name}.npy" for fmt in sorted(self.exports & IMAGE_EXPORTS)]
        return paths + [self.out / f"{name}{suffix}" for fmt, suffix in _PER_IMAGE_SUFFIX.items() if fmt in self.formats]

    def finished(self, name: str) -> bool:
        """Whether image ``name`` has all its files (each is written whole or not at all): a run skips it."""
        paths = self.image_files(name)
        return bool(paths) and all(path.is_file() for path in paths)

    def write_image(self, rgb: np.ndarray, result: Segmentation, image_path: str | Path, name: str, alpha: float) -> list[Path]:
        """Write one segmented image's files (:meth:`image_files`), each atomically, the JSON last; their paths.

        Temporary files an interrupted earlier write of these files left (a killed run or worker)
        are removed first: the image is being written again, by this call alone. The JSON names
        ``image_path``.
        """
        paths = self.image_files(name)
        for path in paths:
            remove_interrupted_writes(path)
        if "embeddings" in self.exports:
            EmbeddingsWriter(self.export_dir, CategoryTable()).add(name, result, image_path)
        if "overlay" in self.formats:
            _write_png(overlay(rgb, result, alpha=alpha), self.out / f"{name}.overlay.png")
        if "labels" in self.formats:
            _write_png(label_image(result), self.out / f"{name}.labels.png", labels=result.labels)
        if "json" in self.formats:
            record = result.to_record(image_path)
            write_bytes_atomically(self.out / f"{name}.json", json.dumps(record, indent=1).encode("utf-8"))
        return paths

    @contextmanager
    def run_files(
        self, categories: CategoryTable | None = None, options: ExportOptions = ExportOptions()
    ) -> Iterator["RunFiles"]:
        """The run's ``results.coco.json`` and exports for the block to feed, image by image, in input
        order; they are written when the block ends normally having been fed some image, and nothing is
        written when it raises or when no image was segmented (every input failed)."""
        coco = CocoWriter.for_run(self.out, options) if "coco" in self.formats else None
        exporter = RunExporter(self.export_dir, self.exports, categories, options) if self.exports else None
        try:
            files = RunFiles(self, coco, exporter)
            yield files
            if files.added and coco is not None:
                coco.finish()
            if files.added and exporter is not None:
                exporter.finish()
        finally:
            if coco is not None:
                coco.close()

    def write_failures(self, outcomes: Iterable[ImageOutcome]) -> Path | None:
        """List the failed ``outcomes`` in ``failures.jsonl`` (atomically), in input order; returns its path.

        One JSON object a line: ``path`` (the input as given), ``name`` (its output name, empty when
        the input named no image) and ``reason``. Each run rewrites the file for its own inputs, so a
        resumed run that fixed them removes it (None is returned when nothing failed).
        """
        path = self.out / FAILURES_FILE
        lines = [
            json.dumps({"path": str(o.path), "name": o.name, "reason": o.reason}, ensure_ascii=False) + "\n"
            for o in outcomes if o.status == "failed"
        ]
        if not lines:
            path.unlink(missing_ok=True)
            return None
        write_bytes_atomically(path, "".join(lines).encode("utf-8"))
        return path


class RunFiles:
    """The run's ``results.coco.json`` (without ``coco`` in the formats: none) and exports, fed one image at a time."""

    def __init__(self, layout: OutputLayout, coco: CocoWriter | None, exporter: RunExporter | None) -> None:
        self.layout = layout
        self.coco = coco
        self.exporter = exporter
        self.added = 0

    def add(self, name: str, result: Segmentation, image_path: str | Path) -> list[Path]:
        """Add a segmentation; returns the export files written for it (the :data:`IMAGE_EXPORTS` are
        the image's own files, :meth:`OutputLayout.write_image`)."""
        self.added += 1
        if self.coco is not None:
            self.coco.add(name, result, image_path)
        if self.exporter is None:
            return []
        return self.exporter.add(name, result, image_path, formats=self.exporter.formats - IMAGE_EXPORTS)

    def add_finished(self, name: str) -> None:
        """Add image ``name`` from its JSON file (an image finished earlier, or by another process);
        a missing or unreadable file is left out."""
        if self.coco is None and self.exporter is None:
            return
        try:
            result, image_path = read_result(self.layout.out / f"{name}.json")
        except (OSError, ValueError, KeyError, TypeError):
            return
        self.add(name, result, image_path)


def _write_png(image: Any, path: Path, labels: list[str] | None = None) -> None:
    """Save a PNG atomically, with the segment names as an ``tagseg:labels`` text chunk when given."""
    info = PngInfo()
    if labels is not None:
        info.add_itxt("tagseg:labels", json.dumps(labels, ensure_ascii=False))
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    write_bytes_atomically(path, buffer.getvalue())


# ----------------------------------------------------------------------------- inputs


def plan_inputs(
    inputs: Iterable[str | os.PathLike[str]], out: Path, filesystem: Any = None
) -> tuple[list[ImageJob], list[ImageOutcome]]:
    """Expand inputs into jobs with unique output names; inputs that name no image become failures.

    A local file is named by its stem, an image below a folder or glob root given as input by its
    path below it (sub-folders are mirrored); URIs that ``pyarrow.fs`` opens (``s3://bucket/photos/``,
    or any path when ``filesystem``, a ``pyarrow.fs.FileSystem``, is given) the same way. Names that
    would collide, case aside (``a.jpg`` and ``a.png``, one stem in two folders), or take the run
    file's name, get ``-<8 hex digits of the SHA-1 of the absolute path or URI>`` appended.
    """
    out_resolved = out.resolve()
    found: dict[str, tuple[Path | str, str]] = {}  # absolute path or URI -> (path as found, name)
    failures: list[ImageOutcome] = []
    for item in inputs:
        text = os.fspath(item)
        if filesystem is not None or is_uri(text):
            matches = [(path, path, name) for path, name in _list_remote(text, filesystem)]
            why = f"{text}: no such file or folder, or it holds no images"
        else:
            matches = [(str(path.resolve()), path, name) for path, name in _expand(text, out_resolved)]
            why = _why_nothing(text)
        if not matches:
            failures.append(ImageOutcome(Path(text), "failed", reason=why))
        for identity, path, name in matches:
            found.setdefault(identity, (path, name))
    counts: dict[str, int] = {}
    for _, name in found.values():
        counts[name.casefold()] = counts.get(name.casefold(), 0) + 1
    reserved = Path(RESULTS_FILE).stem.casefold()
    jobs = []
    for identity, (path, name) in found.items():
        if counts[name.casefold()] > 1 or name.casefold() == reserved:
            name = f"{name}-{hashlib.sha1(identity.encode()).hexdigest()[:8]}"
        jobs.append(ImageJob(path, name))
    return jobs, failures


def _why_nothing(text: str) -> str:
    path = Path(text)
    if path.is_dir():
        return f"{text}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
    if is_glob_pattern(text):
        return f"{text}: the pattern matches no images"
    return f"{text}: no such file or folder"


def _expand(text: str, out_resolved: Path) -> Iterator[tuple[Path, str]]:
    """(image path, output name) pairs named by one input: a file, a folder or a glob pattern."""
    path = Path(text)
    if path.is_file():
        yield path, path.stem
    elif path.is_dir():
        yield from _walk(path, path, out_resolved)
    elif is_glob_pattern(text):
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
    static = parts[: next(i for i, part in enumerate(parts) if is_glob_pattern(part))]
    return Path(*static) if static else Path(".")


def _relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


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
