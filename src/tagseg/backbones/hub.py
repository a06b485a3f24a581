"""Where model weights come from: Hugging Face ids, the local cache, or plain directories.

Every ``transformers`` object tagseg loads (models, configs, tokenizers) goes through
:func:`load_pretrained`, so a missing model always surfaces as one
:class:`~tagseg.errors.ModelNotAvailableError` with a message that says how to provide it,
never as a library traceback. :func:`cache_status` says, without any network access, whether
the cache (or a directory) holds a model completely (``tagseg models list|verify``).

One rule tells the two kinds of source apart (:func:`looks_like_path`). This module imports
neither torch nor transformers at import time, so the command line stays fast.

Before any request to the hub (a model missing from the cache), one TCP connection to the hub's
endpoint (``HF_ENDPOINT``, or the proxy the environment names) is tried with a
:data:`HUB_PROBE_TIMEOUT` of a few seconds: an unreachable hub fails at once with the usual
:class:`~tagseg.errors.ModelNotAvailableError` instead of after the hub client's retries (about
30 s). ``HF_HUB_OFFLINE=1`` skips the probe: the hub client then refuses the network itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from tagseg.errors import ModelNotAvailableError

if TYPE_CHECKING:
    import torch

__all__ = [
    "HUB_PROBE_TIMEOUT",
    "ModelSource",
    "ModelStatus",
    "cache_status",
    "download_model",
    "hub_reachable",
    "load_pretrained",
    "looks_like_path",
    "model_file",
    "read_model_json",
    "require_available",
    "resolve_device",
    "source_name",
]

ModelSource = str | os.PathLike[str]
"""A Hugging Face model id (``facebook/dinov2-base``) or a local model directory."""

_DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")

HUB_PROBE_TIMEOUT = 3.0
"""Seconds the connectivity probe waits for the hub (or its proxy) to accept a connection."""


class _Pretrained(Protocol):
    @classmethod
    def from_pretrained(cls, source: str, *args: Any, **kwargs: Any) -> Any: ...


T = TypeVar("T")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None`` into CUDA when available (else CPU); pass anything else to ``torch.device``."""
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def hub_reachable() -> bool:
    """Whether the Hugging Face hub (or its proxy) accepts a connection within :data:`HUB_PROBE_TIMEOUT` seconds.

    Lets a caller fail at once instead of waiting through ``huggingface_hub``'s retries (a minute or
    more per model) when there is no network. ``HF_HUB_OFFLINE`` counts as unreachable.
    """
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and _hub_unreachable() is None


def source_name(source: ModelSource) -> str:
    """The string that identifies ``source`` in messages and ``model_id`` attributes."""
    return os.fspath(source)


def looks_like_path(name: str) -> bool:
    """True when ``name`` cannot be a Hugging Face id (``name`` or ``owner/name``) and must be a path."""
    return (
        os.path.isabs(name)
        or name.startswith(("~", "."))
        or name.count("/") > 1
        or "\\" in name
        or os.path.exists(name)
    )


def _how_to_provide(name: str) -> str:
    if looks_like_path(name):
        return (
            "Pass a directory written by `save_pretrained` (config.json plus weights), or a Hugging Face id "
            "such as 'facebook/dinov2-base' that is in the local cache."
        )
    return (
        "Provide it in one of these ways: on a machine with internet access run "
        f"`tagseg models download {name}` (or `hf download {name}`, formerly `huggingface-cli download`) "
        "and copy the Hugging Face cache (~/.cache/huggingface, or $HF_HOME) to this machine; "
        "or pass the path of a local directory that holds the model (config.json plus weights, "
        "as written by `save_pretrained`)."
    )


def _missing(name: str, reason: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(f"Model {name!r} is not available: {reason}. {_how_to_provide(name)}")


def _local_directory(name: str) -> Path:
    """The model directory ``name`` points to, checked to look like a saved model."""
    directory = Path(name).expanduser()
    if not directory.is_dir():
        raise _missing(name, "no such directory")
    if not any((directory / marker).is_file() for marker in ("config.json", "tokenizer_config.json")):
        raise _missing(name, "the directory holds no config.json, so it is not a saved model")
    return directory


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached now (one TCP connection to its endpoint or proxy), else None.

    None too when the hub client is offline (``HF_HUB_OFFLINE``): it refuses requests at once itself.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    target = endpoint
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname or "", port), timeout=HUB_PROBE_TIMEOUT):
            return None
    except OSError as error:
        via = f" through the proxy {target.hostname}:{port}" if target is not endpoint else ""
        return (
            f"the Hugging Face hub at {constants.ENDPOINT} cannot be reached{via} "
            f"({error.strerror or error or type(error).__name__})"
        )


def require_available(statuses: Iterable[ModelStatus]) -> None:
    """Raise one :class:`ModelNotAvailableError` naming every model of ``statuses`` that cannot be loaded.

    Called before any model loads, with the status of every model a run needs (features, CLIP,
    SAM): models that are ready pass; Hugging Face ids missing from the cache pass when the hub
    answers (one probe for all of them), since they will be downloaded; everything else is listed
    in one message, with the one command that fetches them all.
    """
    problems = [status for status in statuses if not status.ready]
    from_hub = [status.model for status in problems if status.kind == "hub"]
    local = [status for status in problems if status.kind != "hub"]
    offline = _offline_reason() if from_hub else None
    if not local and offline is None:
        return
    lines = [f"{len(local) + (len(from_hub) if offline else 0)} model(s) of this run cannot be loaded:"]
    lines += [f"  {status.model}: {status.problem}" for status in local]
    if offline is not None:
        lines += [f"  {model}: not in the local Hugging Face cache" for model in from_hub]
        listed = " ".join(from_hub)
        lines += [
            f"The hub cannot download them: {offline}.",
            f"Fetch them all on a machine with internet access with `tagseg models download {listed}` and copy "
            "its Hugging Face cache (~/.cache/huggingface, or $HF_HOME) here, or with "
            "`tagseg models pack models.tar` there (same preset and flags as this run) and "
            "`tagseg models unpack models.tar` here; or pass the local directories the models were saved to "
            "(feature_model, clip_model, sam_model; --feature-model ... on the command line).",
        ]
    else:
        lines.append("Pass the directory a model was saved to (config.json plus weights, as written by `save_pretrained`).")
    raise ModelNotAvailableError("\n".join(lines))


def _offline_reason() -> str | None:
    """Why models cannot be downloaded now (``HF_HUB_OFFLINE``, or the hub does not answer one probe), else None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return _hub_unreachable()


def _require_hub(name: str) -> None:
    """Raise the model's :class:`ModelNotAvailableError` at once when the hub is unreachable."""
    reason = _hub_unreachable()
    if reason is not None:
        raise _missing(name, f"it is not in the local cache and {reason}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _LoadReportFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextmanager
def _without_load_report() -> Iterator[None]:
    """Drop transformers' per-key load report; :func:`load_pretrained` checks missing weights itself."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _LoadReportFilter()
    report_logger.addFilter(report_filter)
    try:
        yield
    finally:
        report_logger.removeFilter(report_filter)


def _cache_first(loader: type[T] | _Pretrained, location: str | None, *, local: bool, **kwargs: Any) -> Any:
    """Load from the local cache without touching the network; only a cache miss asks the hub
    (after :func:`_require_hub` found it reachable).

    Local loads run without progress bars (transformers draws one per checkpoint tensor group);
    downloads keep theirs.
    """
    if local or kwargs.get("local_files_only"):
        with _without_progress_bars():
            return loader.from_pretrained(location, **kwargs)  # type: ignore[union-attr]
    try:
        with _without_progress_bars():
            return loader.from_pretrained(location, local_files_only=True, **kwargs)  # type: ignore[union-attr]
    except (OSError, ValueError):
        _require_hub(location)
        return loader.from_pretrained(location, **kwargs)  # type: ignore[union-attr]


@contextmanager
def _without_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


@contextmanager
def tensors_read_one_by_one(source: ModelSource) -> Iterator[dict[str, Any] | None]:
    """The checkpoint's tensors as slices that are read one at a time (``pread``, no memory map).

    For a checkpoint that is one ``model.safetensors`` on disk (a model directory, or a Hugging
    Face id already in the cache); ``None`` otherwise, or where safetensors cannot read so. Passed
    as ``state_dict`` to ``from_pretrained`` in another dtype, each tensor is read, converted and
    dropped in turn, so the load's peak follows the converted model instead of the whole float32
    file (a memory-mapped checkpoint's converted pages stay resident; docs/speed.md).
    """
    from safetensors import safe_open

    name = source_name(source)
    if looks_like_path(name):
        path: str | None = str(_local_directory(name) / "model.safetensors")
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "model.safetensors")
        path = cached if isinstance(cached, str) else None
    if path is None or not Path(path).is_file():
        yield None
        return
    try:
        reader = safe_open(path, framework="pt", backend="pread")
    except TypeError:  # a safetensors without the pread backend
        yield None
        return
    with reader:
        yield {key: reader.get_slice(key) for key in reader.keys()}


def load_pretrained(loader: type[T] | _Pretrained, source: ModelSource, **kwargs: Any) -> T:
    """Call ``loader.from_pretrained`` on a Hugging Face id or a local directory.

    Hugging Face ids are read from the local cache first, with no network request; only a cache miss
    asks the hub (``HF_HUB_OFFLINE`` is respected). Any failure to find the files becomes a :class:`ModelNotAvailableError` naming the model. For model classes,
    weights the checkpoint lacks are an error too (they would silently stay random); weights it has
    beyond the model's (the other tower of a full CLIP checkpoint) are ignored. With a
    ``state_dict`` (and its ``config``) the weights come from it and the source only names the model.
    """
    from transformers import PreTrainedModel

    name = source_name(source)
    location = str(_local_directory(name)) if looks_like_path(name) else name
    if "state_dict" in kwargs:
        location = None  # transformers takes weights from a state dict only without a location
    is_model = isinstance(loader, type) and issubclass(loader, PreTrainedModel)
    if is_model:
        kwargs["output_loading_info"] = True
    try:
        with _without_load_report():
            loaded = _cache_first(loader, location, local=looks_like_path(name), **kwargs)
    except ModelNotAvailableError:
        raise
    except (OSError, ValueError) as error:
        raise _missing(name, f"loading failed ({_first_line(error)})") from None
    if not is_model:
        return loaded
    model, info = loaded
    if info["missing_keys"]:
        example = sorted(info["missing_keys"])[0]
        raise _missing(
            name,
            f"it does not hold the weights of a {loader.__name__} "  # type: ignore[union-attr]
            f"({len(info['missing_keys'])} missing, e.g. {example!r})",
        )
    return model


def read_model_json(source: ModelSource, filename: str) -> dict[str, Any] | None:
    """The parsed JSON file ``filename`` of a model, or ``None`` when the model has no such file.

    For Hugging Face ids the file is looked up in the cache (and downloaded when the hub is reachable).
    """
    path = model_file(source, filename)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def model_file(source: ModelSource, filename: str) -> Path | None:
    """The path of the file ``filename`` of a model, or ``None`` when the model has no such file.

    For Hugging Face ids the file is looked up in the cache (and downloaded when the hub is reachable
    and the model is not cached: a cached model lacking the file has none).
    """
    name = source_name(source)
    if looks_like_path(name):
        path = _local_directory(name) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(name, filename)
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None or isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None  # known absent, or the model is cached without it (downloads take every JSON file)
    offline = _hub_unreachable() is not None  # then the cache is all there is, as with HF_HUB_OFFLINE
    try:
        return Path(hf_hub_download(name, filename, local_files_only=offline))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except OSError as error:
        raise _missing(name, f"cannot read {filename} ({error})") from None


def download_model(model_id: str, patterns: tuple[str, ...] = _DOWNLOAD_PATTERNS) -> Path:
    """Download a Hugging Face model into the local cache (configs, safetensors weights, tokenizer).

    Returns the snapshot directory. Raises :class:`ModelNotAvailableError` when it cannot be fetched.
    """
    from huggingface_hub import snapshot_download

    _require_hub(model_id)
    try:
        return Path(snapshot_download(model_id, allow_patterns=list(patterns)))
    except (OSError, ValueError) as error:
        raise _missing(model_id, f"download failed ({_first_line(error)})") from None


@dataclass
class ModelStatus:
    """Whether one model is ready for offline use.

    ``kind`` is ``hub`` (Hugging Face id, looked up in the cache), ``local`` (a directory) or
    ``builtin`` (provided by a registered backend, such as the toy world). ``problem`` says what
    is wrong and what to do; None when ready.
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


def cache_status(models: Iterable[str], *, verify: bool = False, cache_dir: str | Path | None = None) -> list[ModelStatus]:
    """Check Hugging Face ids in the cache and directories on disk, without any network access.

    A model is ready when its config and weights are present. With ``verify``, every cached file is
    also hashed and compared with the checksum the cache stored it under (slow for large models).
    Names of registered backends are not models of the hub: ask :func:`tagseg.builder.model_status`.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = {repo.repo_id: repo for repo in scan_cache_dir(cache_dir).repos if repo.repo_type == "model"}
    except CacheNotFound:
        repos = {}
    return [
        _local_status(model) if looks_like_path(model) else _hub_status(model, repos.get(model), verify)
        for model in models
    ]


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
    fetch = (
        f"run `tagseg models download {model}` on a machine with internet access and copy its Hugging Face cache "
        "here, or `tagseg models pack ARCHIVE` there and `tagseg models unpack ARCHIVE` here"
    )
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
