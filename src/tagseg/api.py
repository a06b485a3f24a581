"""One Python call per command-line command; the ``tagseg`` CLI is a thin layer over this module.

* :func:`segment_files` — ``tagseg segment``: images in, overlay/label PNGs and JSON files out.
* :func:`resolve_config`, :func:`config_toml` — ``tagseg config show``.
* :func:`model_status`, :func:`download_models` — ``tagseg models list|verify|download``.

It lives apart from :mod:`tagseg.pipeline` because it owns files and folders (naming outputs,
resuming, reporting), which the pipeline, the HTTP service and notebook users do not need.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal

from tagseg import __version__
from tagseg.config import TAGConfig, load_config, preset
from tagseg.errors import ConfigError, TagsegError
from tagseg.image import ImageSource, load_image
from tagseg.render import label_image, overlay
from tagseg.result import Segmentation

if TYPE_CHECKING:
    from tagseg.exports import CategoryTable, RunExporter
    from tagseg.pipeline import TAG

__all__ = [
    "BatchListener",
    "BatchReport",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "ImageOutcome",
    "ModelStatus",
    "RESULTS_FILE",
    "coco_rle_string",
    "config_models",
    "config_toml",
    "download_models",
    "image_record",
    "model_status",
    "resolve_config",
    "segment_files",
    "segmentation_schema",
]

FORMATS = ("overlay", "labels", "json", "coco")
"""Output formats: per image ``<name>.overlay.png``, ``<name>.labels.png``, ``<name>.json``; per run ``results.coco.json``."""

RESULTS_FILE = "results.coco.json"

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif"}
)
"""File endings that folder and glob inputs pick up; files named one by one may have any ending."""

_PER_IMAGE_SUFFIX = {"overlay": ".overlay.png", "labels": ".labels.png", "json": ".json"}
_GLOB_CHARS = frozenset("*?[")


# ----------------------------------------------------------------------------- settings


def resolve_config(
    preset_name: str | None = None, config_file: str | Path | None = None, **overrides: Any
) -> TAGConfig:
    """Effective settings: a preset (default ``paper``), then a TOML file, then ``overrides``.

    ``preset_name`` replaces the file's own ``preset`` key; ``None`` overrides are ignored, so flags
    that a user did not give leave the file's values alone.
    """
    if config_file is None:
        return preset(preset_name or "paper", **overrides)
    config = load_config(config_file, **overrides)  # validates the file, with readable errors
    if preset_name is None:
        return config
    data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
    data.pop("preset", None)
    return preset(preset_name, **data).replace(**overrides)


def config_toml(config: TAGConfig) -> str:
    """``config`` as a TOML document that :func:`~tagseg.config.load_config` reads back unchanged."""
    lines = ["# tagseg settings; use with `tagseg segment --config FILE` (flags override them)"]
    tables = []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines += ["", f"[{name}]"] + [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    """A bare TOML key where allowed, else a quoted one (alias tables hold multi-word names)."""
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


# ----------------------------------------------------------------------------- results


def segmentation_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the per-image JSON file, as shipped with the package."""
    text = resources.files("tagseg").joinpath("data/segmentation.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def image_record(result: Segmentation, path: str | Path | None = None) -> dict[str, Any]:
    """The per-image JSON document: :meth:`Segmentation.to_dict` plus the image path, timings and version."""
    record = result.to_dict()
    if path is not None:
        record["image"] = {"path": str(path), **record["image"]}
    record["timings"] = {stage: round(seconds, 6) for stage, seconds in result.timings.items()}
    record["tagseg_version"] = __version__
    return record


def coco_rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of uncompressed ``counts`` (what ``pycocotools.mask.encode`` gives)."""
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr((chunk | 0x20 if more else chunk) + 48))
    return "".join(chars)


# ----------------------------------------------------------------------------- batch


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


class BatchListener:
    """Hooks :func:`segment_files` calls as it goes (a progress bar subclasses this); all do nothing here."""

    def started(self, total: int) -> None:
        """The inputs were expanded into ``total`` images (and failures of inputs that named none)."""

    def loading_models(self) -> None:
        """Models are about to load (only when some image needs segmenting)."""

    def image_started(self, path: Path) -> None:
        """``path`` is about to be segmented."""

    def image_finished(self, outcome: ImageOutcome) -> None:
        """One input is done, skipped or failed."""


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
    categories: "CategoryTable | None" = None,
) -> BatchReport:
    """Segment image files, folders (recursively) and glob patterns, writing results under ``out_dir``.

    Per image: ``<name>.overlay.png``, ``<name>.labels.png`` and ``<name>.json``, where ``<name>``
    is the file's stem, or its path below a folder or glob root given as input (sub-folders are
    mirrored). Names that would collide (``a.jpg`` and ``a.png``, the same stem in two folders) get
    ``-<8 hex digits of the file's absolute path hash>`` appended. The run's segments for every image
    with a JSON file, skipped ones included, go to ``results.coco.json`` (COCO with scores).

    Images whose requested outputs all exist are skipped unless ``overwrite``. A bad image is
    recorded as failed and the batch goes on. Models are built once from ``config`` (default: the
    ``paper`` preset), and only if some image needs segmenting; pass ``tag`` to reuse a built one.
    Errors that stop the whole run (models or database missing) raise :class:`TagsegError`.

    ``exports`` (from :data:`tagseg.exports.EXPORT_FORMATS`) also writes dataset formats under
    ``out_dir/export`` with one category table (``categories``, or a new one) for the run; skipped
    images are exported from their JSON files (no embeddings for them).
    """
    started_at = time.perf_counter()
    listener = listener or BatchListener()
    wanted = _check_formats(formats)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot create the output folder {out}: {error.strerror or error}") from None
    exporter = _exporter(out, exports, categories)  # checks the export formats before any model loads
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
    spool = _CocoSpool(out) if "coco" in wanted else None
    try:
        for job in jobs:
            if job.name in pending_names:
                listener.image_started(job.path)
                outcome = _segment_one(tag, job, out, wanted, alpha, spool, exporter)  # type: ignore[arg-type]
            else:
                outcome = ImageOutcome(job.path, "skipped", job.name, outputs=_per_image_paths(out, job.name, wanted))
                if spool is not None:
                    spool.add_existing(out / f"{job.name}.json")
                if exporter is not None:
                    _export_existing(exporter, out, job)
            outcomes.append(outcome)
            listener.image_finished(outcome)
        if spool is not None:
            spool.finish()
        if exporter is not None:
            exporter.finish()
    finally:
        if spool is not None:
            spool.discard()
    return BatchReport(outcomes, out, model_seconds, time.perf_counter() - started_at)


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


def _exporter(out: Path, exports: Iterable[str], categories: "CategoryTable | None") -> "RunExporter | None":
    formats = list(exports)
    if not formats:
        return None
    from tagseg.exports import RunExporter

    return RunExporter(out / "export", formats, categories)


def _export_existing(exporter: "RunExporter", out: Path, job: _Job) -> None:
    """A skipped image's earlier result, from its JSON file; a missing or unreadable file is left out."""
    from tagseg.exports import read_result

    try:
        result, image_path = read_result(out / f"{job.name}.json")
    except (OSError, ValueError, KeyError):
        return
    exporter.add(job.name, result, image_path, formats=exporter.formats - {"embeddings"})


def _segment_one(
    tag: "TAG", job: _Job, out: Path, wanted: frozenset[str], alpha: float, spool: "_CocoSpool | None",
    exporter: "RunExporter | None" = None,
) -> ImageOutcome:
    start = time.perf_counter()
    try:
        result, record, paths = write_image_outputs(tag, job.path, job.path, job.name, out, wanted, alpha)
        if spool is not None:
            spool.add(record)
        if exporter is not None:
            paths += exporter.add(job.name, result, job.path)
    except Exception as error:  # noqa: BLE001 - one bad image must never stop the batch
        return ImageOutcome(job.path, "failed", job.name, reason=failure_reason(error), seconds=time.perf_counter() - start)
    return ImageOutcome(
        job.path, "done", job.name, outputs=paths, labels=result.labels, seconds=time.perf_counter() - start
    )


def write_image_outputs(
    tag: "TAG", image: ImageSource, image_path: str | Path, name: str, out: Path, wanted: frozenset[str], alpha: float
) -> tuple[Segmentation, dict[str, Any], list[Path]]:
    """Segment ``image`` and write its per-image outputs ``out/<name>.*``, each atomically, the JSON last.

    Every engine calls this, so one image gives the same files whichever runs it. Returns the
    result, its JSON record (which names ``image_path``) and the files written.
    """
    rgb = load_image(image)
    result = tag(rgb)
    paths = _per_image_paths(out, name, wanted)
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    record = image_record(result, image_path)
    if "overlay" in wanted:
        _write_png(overlay(rgb, result, alpha=alpha), out / f"{name}.overlay.png")
    if "labels" in wanted:
        _write_png(label_image(result), out / f"{name}.labels.png", labels=result.labels)
    if "json" in wanted:
        _write_atomic(out / f"{name}.json", json.dumps(record, indent=1).encode("utf-8"))
    return result, record, paths


def failure_reason(error: Exception) -> str:
    """How a failed image is reported: a tagseg error's own message, else the exception's type and message."""
    return str(error) if isinstance(error, TagsegError) else f"{type(error).__name__}: {error}"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file so an interrupted run never leaves a partial output that resume would skip."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _write_png(image: Any, path: Path, labels: list[str] | None = None) -> None:
    from io import BytesIO

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if labels is not None:
        info.add_itxt("tagseg:labels", json.dumps(labels, ensure_ascii=False))
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    _write_atomic(path, buffer.getvalue())


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


# ----------------------------------------------------------------------------- COCO results


class _CocoSpool:
    """Collects the run's COCO records on disk (never the whole batch in memory), then writes one file."""

    def __init__(self, out: Path) -> None:
        self.target = out / RESULTS_FILE
        self.path = out / (RESULTS_FILE + ".partial.jsonl")
        self.handle = self.path.open("w", encoding="utf-8")
        self.settings: dict[str, Any] = {}
        self.models: dict[str, Any] = {}

    def add(self, record: dict[str, Any]) -> None:
        self.settings = self.settings or record.get("settings", {})
        self.models = self.models or record.get("models", {})
        self.handle.write(json.dumps({"image": record["image"], "segments": record["segments"]}) + "\n")

    def add_existing(self, json_path: Path) -> None:
        """A skipped image's earlier result; a missing or unreadable file is left out."""
        try:
            self.add(json.loads(json_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            pass

    def finish(self) -> None:
        """Write ``results.coco.json``: images, categories (segment names) and scored annotations."""
        self.handle.close()
        categories: dict[str, int] = {}
        partial = self.target.with_name(self.target.name + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            out.write('{"info": ' + json.dumps(self._info()) + ',\n"images": [')
            for image_id, line in enumerate(self._lines(), start=1):
                image = json.loads(line)["image"]
                entry = {"id": image_id, "file_name": image.get("path", ""), "height": image["height"], "width": image["width"]}
                out.write(("," if image_id > 1 else "") + "\n" + json.dumps(entry))
            out.write('],\n"annotations": [')
            annotation_id = 0
            for image_id, line in enumerate(self._lines(), start=1):
                for segment in json.loads(line)["segments"]:
                    annotation_id += 1
                    category = categories.setdefault(segment["label"], len(categories) + 1)
                    annotation = {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": category,
                        "segmentation": {"size": segment["rle"]["size"], "counts": coco_rle_string(segment["rle"]["counts"])},
                        "area": segment["area"],
                        "bbox": segment["bbox"],
                        "score": segment["score"],
                        "iscrowd": 0,
                    }
                    out.write(("," if annotation_id > 1 else "") + "\n" + json.dumps(annotation))
            names = [{"id": i, "name": name, "supercategory": "tagseg"} for name, i in categories.items()]
            out.write('],\n"categories": ' + json.dumps(names) + "}\n")
        os.replace(partial, self.target)

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)

    def _lines(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8") as handle:
            yield from handle

    def _info(self) -> dict[str, Any]:
        return {
            "description": "tagseg results: open-vocabulary segments named by the model, one category per name",
            "version": __version__,
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "models": self.models,
            "settings": self.settings,
        }


# ----------------------------------------------------------------------------- models


@dataclass
class ModelStatus:
    """Whether one model is ready for offline use.

    ``kind`` is ``hub`` (Hugging Face id, looked up in the cache), ``local`` (a directory) or
    ``builtin`` (the toy world). ``problem`` says what is wrong and what to do; None when ready.
    """

    model: str
    kind: Literal["hub", "local", "builtin"]
    location: str | None = None
    size_bytes: int = 0
    files: int = 0
    problem: str | None = None

    @property
    def ready(self) -> bool:
        return self.problem is None


def config_models(config: TAGConfig) -> list[str]:
    """The model ids or directories a configuration needs, without repeats."""
    return list(dict.fromkeys([config.feature_model, config.clip_model]))


def model_status(models: Iterable[str], *, verify: bool = False, cache_dir: str | Path | None = None) -> list[ModelStatus]:
    """Check each model in the Hugging Face cache (or on disk) without any network access.

    A model is ready when its config and weights are present. With ``verify``, every cached file is
    also hashed and compared with the checksum the cache stored it under (slow for large models).
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = {repo.repo_id: repo for repo in scan_cache_dir(cache_dir).repos if repo.repo_type == "model"}
    except CacheNotFound:
        repos = {}
    statuses = []
    for model in models:
        if model == "toy":
            statuses.append(ModelStatus(model, "builtin", "built into tagseg"))
        elif _is_local(model):
            statuses.append(_local_status(model))
        else:
            statuses.append(_hub_status(model, repos.get(model), verify))
    return statuses


def download_models(models: Iterable[str]) -> list[Path]:
    """Download Hugging Face models into the cache (skipping built-in and local ones); snapshot folders."""
    from tagseg.models import download_model

    return [download_model(model) for model in models if model != "toy" and not _is_local(model)]


def _is_local(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or Path(model).expanduser().is_dir()


def _has_weights(names: Iterable[str]) -> bool:
    return any(name.endswith((".safetensors", ".bin")) for name in names)


def _local_status(model: str) -> ModelStatus:
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return ModelStatus(model, "local", str(folder), problem="no such directory; pass the folder a model was saved to")
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    names = [p.name for p in files]
    problem = None
    if "config.json" not in names or not _has_weights(names):
        problem = "the folder lacks config.json or weights (*.safetensors); save the model there with save_pretrained"
    return ModelStatus(model, "local", str(folder), size, len(files), problem)


def _hub_status(model: str, repo: Any, verify: bool) -> ModelStatus:
    fetch = f"run `tagseg models download {model}` on a machine with internet access"
    if repo is None:
        return ModelStatus(model, "hub", problem=f"not in the Hugging Face cache; {fetch}")
    revision = _current_revision(repo)
    files = list(revision.files)
    names = [f.file_name for f in files]
    status = ModelStatus(model, "hub", str(revision.snapshot_path), revision.size_on_disk, len(files))
    if "config.json" not in names or not _has_weights(names):
        status.problem = f"the cached copy lacks config.json or weights; {fetch}"
    elif verify:
        broken = [f.file_name for f in files if not _blob_intact(Path(f.blob_path))]
        if broken:
            status.problem = (
                f"corrupt cached file(s): {', '.join(sorted(broken))}; delete {repo.repo_path} and {fetch}"
            )
    return status


def _current_revision(repo: Any) -> Any:
    """The revision ``main`` points to, else the most recently modified one."""
    for revision in repo.revisions:
        if "main" in revision.refs:
            return revision
    return max(repo.revisions, key=lambda r: r.last_modified)


def _blob_intact(blob: Path) -> bool:
    """Compare a cache blob with its name: the SHA-256 of large (LFS) files, the git blob SHA-1 of others."""
    name = blob.name
    if len(name) == 64:
        digest = hashlib.sha256()
    elif len(name) == 40:
        digest = hashlib.sha1(f"blob {blob.stat().st_size}\0".encode())
    else:
        return True  # not a content-addressed blob: nothing to compare with
    with blob.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == name
