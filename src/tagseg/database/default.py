"""The database tagseg uses when none is given: its shipped vocabulary, embedded once and cached."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
from importlib import resources
from pathlib import Path

import platformdirs

from tagseg.database.build import build_database
from tagseg.database.store import MANIFEST, PersistentTextDatabase, read_manifest
from tagseg.errors import DatabaseError
from tagseg.files import exclusive_lock
from tagseg.interfaces import TextEncoder

CACHE_ENV = "TAGSEG_CACHE"
DEFAULT_VOCABULARY = "imagenet21k_lemmas.txt.gz"
DEFAULT_TEMPLATE = "{}"
ENCODE_BATCH = 2048
"""Texts handed to the encoder at once: CLIP encoders sort them by length, so larger means less padding."""


def cache_root() -> Path:
    """Where tagseg caches data: ``$TAGSEG_CACHE`` if set, else the user's cache folder."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir("tagseg"))


def default_vocabulary_path() -> Path:
    """The shipped vocabulary file (one concept a line, gzipped)."""
    return Path(str(resources.files("tagseg") / "data" / "vocabulary" / DEFAULT_VOCABULARY))


def default_vocabulary() -> list[str]:
    """The shipped concept names."""
    with gzip.open(default_vocabulary_path(), "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def default_database_path(encoder: TextEncoder, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the default database for ``encoder`` is cached: keyed by model, vocabulary and template."""
    vocabulary = hashlib.sha256(gzip.decompress(default_vocabulary_path().read_bytes())).hexdigest()
    key = hashlib.sha256(f"{encoder.model_id}\n{encoder.dim}\n{DEFAULT_TEMPLATE}\n{vocabulary}".encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.model_id).strip("_")[-60:] or "model"
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "databases"
    return root / f"default-{readable}-{key[:16]}"


def default_database(
    encoder: TextEncoder, *, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> PersistentTextDatabase:
    """The shipped vocabulary embedded with ``encoder``, built on first use and cached.

    The first call embeds the vocabulary (minutes on a CPU for CLIP ViT-L/14); later calls, in
    any process, open the cached copy. Concurrent first calls wait for one another, and a build
    that is interrupted resumes at the next call.
    """
    path = default_database_path(encoder, cache_dir=cache_dir)
    if (path / MANIFEST).is_file():
        return PersistentTextDatabase.open(path, encoder=encoder)
    partial = path.with_name(path.name + ".partial")
    with exclusive_lock(path.with_name(path.name + ".lock")):
        if not (path / MANIFEST).is_file():
            resume = _resumable(partial)
            if not resume:
                shutil.rmtree(partial, ignore_errors=True)
            build_database(
                partial,
                [default_vocabulary_path()],
                encoder,
                template=DEFAULT_TEMPLATE,
                batch_size=ENCODE_BATCH,
                resume=resume,
                progress=progress,
            )
            os.rename(partial, path)
    return PersistentTextDatabase.open(path, encoder=encoder)


def _resumable(partial: Path) -> bool:
    try:
        build = read_manifest(partial).get("build")
    except DatabaseError:
        return False
    return bool(build) and not build.get("complete")
