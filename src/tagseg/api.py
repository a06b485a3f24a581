"""Deprecated home of the batch runner and the per-image record; still holds settings resolution and model status.

* :func:`resolve_config`, :func:`config_toml` — ``tagseg config show``.
* :func:`model_status`, :func:`download_models` — ``tagseg models list|verify|download``.

The other names moved (importing them from here still works, with a :class:`DeprecationWarning`):
the batch runner to :mod:`tagseg.batch`, the per-image record to
:meth:`tagseg.result.Segmentation.to_record` and :func:`tagseg.result.segmentation_schema`,
COCO RLE strings to :mod:`tagseg.masks`, the run file's name to :mod:`tagseg.exports.coco`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

from tagseg.config import TAGConfig, load_config, preset
from tagseg.result import Segmentation

if TYPE_CHECKING:
    from tagseg.batch import FORMATS, IMAGE_SUFFIXES, BatchListener, BatchReport, ImageOutcome, segment_files
    from tagseg.exports.coco import RESULTS_FILE
    from tagseg.masks import coco_rle_string
    from tagseg.result import segmentation_schema

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

_MOVED = {
    "BatchListener": "tagseg.batch",
    "BatchReport": "tagseg.batch",
    "FORMATS": "tagseg.batch",
    "IMAGE_SUFFIXES": "tagseg.batch",
    "ImageOutcome": "tagseg.batch",
    "segment_files": "tagseg.batch",
    "RESULTS_FILE": "tagseg.exports.coco",
    "coco_rle_string": "tagseg.masks",
    "segmentation_schema": "tagseg.result",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"tagseg.api.{name} moved to {_MOVED[name]}.{name}; import it from there.", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'tagseg.api' has no attribute {name!r}")


def image_record(result: Segmentation, path: str | Path | None = None) -> dict[str, Any]:
    """Deprecated: use :meth:`Segmentation.to_record`."""
    warnings.warn("tagseg.api.image_record(result, path) is result.to_record(path) now.", DeprecationWarning, stacklevel=2)
    return result.to_record(path)


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
