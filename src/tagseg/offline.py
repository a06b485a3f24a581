"""Machines without internet: pack what a run needs into one archive, unpack it, check what is missing.

:func:`pack` (on a machine with internet) writes every Hugging Face model a configuration needs
(features, CLIP, SAM when chosen; the cache's own files, downloaded first where missing) and its
shipped vocabulary embedded with the configuration's text tower into one tar archive.
:func:`unpack` puts them into this machine's Hugging Face cache and tagseg's cache, where a run
finds them with no download and no hub probe. :func:`check` says, without any network access,
what a run of a configuration needs and lacks, with the fix for each.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tagseg.builder import config_models, download_models, model_status
from tagseg.database.default import SHIPPED_VOCABULARIES, cache_root
from tagseg.database.store import MANIFEST
from tagseg.errors import ConfigError

if TYPE_CHECKING:
    from tagseg.config import TAGConfig

__all__ = ["ARCHIVE_MANIFEST", "Requirement", "check", "pack", "unpack"]

ARCHIVE_MANIFEST = "tagseg-archive.json"
"""The archive's table of contents: the models and databases it holds."""


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_folder(model_id: str) -> Path:
    return _hub_cache() / f"models--{model_id.replace('/', '--')}"


def pack(config: TAGConfig, archive: str | os.PathLike[str], *, progress: bool = True) -> dict[str, list[str]]:
    """Write the models and the embedded shipped vocabulary a run of ``config`` needs to the tar ``archive``.

    Models missing from the Hugging Face cache are downloaded first; the shipped vocabulary
    (``database = "default"`` or ``"landmarks"``) is embedded with the text tower if it is not cached
    yet. Models given as local folders and registered backends (``toy``) are not packed: they are
    listed under ``not_packed``. Returns the archive's table of contents.
    """
    models = config_models(config)
    statuses = model_status(models, cache_dir=_hub_cache())
    download_models([status.model for status in statuses if status.kind == "hub" and not status.ready])
    hub = [status.model for status in statuses if status.kind == "hub"]
    databases = _embedded_vocabulary(config, progress) if os.fspath(config.database) in SHIPPED_VOCABULARIES else []
    contents = {
        "models": hub,
        "databases": [path.name for path in databases],
        "not_packed": [status.model for status in statuses if status.kind != "hub"],
    }
    target = Path(archive)
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        manifest = partial.with_name(partial.name + ".json")
        manifest.write_text(json.dumps(contents, indent=1), encoding="utf-8")
        tar.add(manifest, arcname=ARCHIVE_MANIFEST)
        manifest.unlink()
        for model in hub:
            tar.add(_repo_folder(model), arcname=f"hub/{_repo_folder(model).name}")
        for path in databases:
            tar.add(path, arcname=f"databases/{path.name}")
    os.replace(partial, target)
    return contents


def _embedded_vocabulary(config: TAGConfig, progress: bool) -> list[Path]:
    from tagseg.builder import build_text_encoder
    from tagseg.database import default_database

    database = default_database(build_text_encoder(config), vocabulary=os.fspath(config.database), progress=progress)
    return [Path(database.path)]


def unpack(
    archive: str | os.PathLike[str], *, hub_cache: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, list[str]]:
    """Install an archive written by :func:`pack`: models into the Hugging Face cache (``hub_cache``, default
    ``$HF_HUB_CACHE``), databases into tagseg's cache (``cache_dir``, default ``$TAGSEG_CACHE``). Returns its
    table of contents. Members are extracted with tarfile's ``data`` filter (nothing outside the caches)."""
    hub_root = Path(hub_cache) if hub_cache is not None else _hub_cache()
    database_root = (Path(cache_dir) if cache_dir is not None else cache_root()) / "databases"
    try:
        tar = tarfile.open(archive)
    except (OSError, tarfile.TarError) as error:
        raise ConfigError(f"{archive} is not an archive written by `tagseg models pack`: {error}") from None
    with tar:
        try:
            contents = json.load(tar.extractfile(ARCHIVE_MANIFEST))  # type: ignore[arg-type]
        except (KeyError, ValueError):
            raise ConfigError(f"{archive} holds no {ARCHIVE_MANIFEST}: it was not written by `tagseg models pack`.") from None
        for prefix, root in (("hub/", hub_root), ("databases/", database_root)):
            members = []
            for member in tar.getmembers():
                if member.name.startswith(prefix):
                    member.name = member.name.removeprefix(prefix)
                    members.append(member)
            root.mkdir(parents=True, exist_ok=True)
            tar.extractall(root, members=members, filter="data")
    return contents


@dataclass(frozen=True)
class Requirement:
    """One thing a run needs: whether it is here, what it is, and how to get it when it is not."""

    name: str
    ready: bool
    detail: str
    fix: str = ""


_EXTRAS = {
    "ray": ("ray", "`--engine ray`", "pip install -e '.[ray]' (in a checkout of tagseg)"),
    "serve": ("fastapi", "`tagseg serve`", "pip install -e '.[serve]' (in a checkout of tagseg)"),
    "eval": ("sentence_transformers", "`tagseg eval`'s tag protocol", "pip install -e '.[eval]' (in a checkout of tagseg)"),
}


def check(config: TAGConfig) -> list[Requirement]:
    """What a run of ``config`` needs and whether this machine has it, without any network access.

    The models (features, CLIP, SAM when chosen), the shipped vocabulary's embedding for the
    configuration's text tower (built on first use when missing: minutes on a CPU), and the
    optional extras (Ray, the web service, evaluation), each with the fix when it is missing.
    """
    found = []
    for status in model_status(config_models(config), cache_dir=_hub_cache()):
        where = status.location or ""
        found.append(Requirement(f"model {status.model}", status.ready, where if status.ready else status.problem or ""))
    database = os.fspath(config.database)
    if database in SHIPPED_VOCABULARIES:
        cached = _cached_vocabulary(database, config.clip_model)
        found.append(Requirement(
            f"vocabulary {database!r} embedded with {config.clip_model}", cached is not None,
            str(cached) if cached else "not cached: the first run embeds it (minutes on a CPU)",
            "" if cached else f"run `tagseg db default --text-model {config.clip_model}` ahead, or unpack an archive "
            "of `tagseg models pack`",
        ))
    elif database != "toy":
        present = Path(database).is_dir()
        found.append(Requirement(f"database {database}", present, "a folder" if present else "no such folder",
                                 "" if present else "pass a folder made by `tagseg db build`"))
    for extra, (module, used_by, fix) in _EXTRAS.items():
        present = importlib.util.find_spec(module) is not None
        found.append(Requirement(f"extra [{extra}]", present, f"for {used_by}", "" if present else fix))
    return found


def _cached_vocabulary(vocabulary: str, model_id: str) -> Path | None:
    """The cached embedding of a shipped vocabulary by ``model_id``, looked up without loading the model."""
    root = cache_root() / "databases"
    if not root.is_dir():
        return None
    for folder in sorted(root.glob(f"{vocabulary}-*")):
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("model_id") == model_id and not folder.name.endswith((".partial", ".lock")):
            return folder
    return None
