"""The databases tagseg ships as vocabularies, embedded once per text model and cached.

``default`` (the database used when none is given) is the ImageNet-21k lemmas; ``landmarks`` is
the same plus WordNet's instance nouns for structures, places and landmarks (the Eiffel Tower,
the Leaning Tower of Pisa, Kyoto, the Nile): :data:`SHIPPED_VOCABULARIES`.
"""

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
from tagseg.progress import ProgressListener

CACHE_ENV = "TAGSEG_CACHE"
DEFAULT_VOCABULARY = "imagenet21k_lemmas.txt.gz"
LANDMARK_VOCABULARY = "wordnet_landmarks.txt.gz"
SHIPPED_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "default": (DEFAULT_VOCABULARY,),
    "landmarks": (DEFAULT_VOCABULARY, LANDMARK_VOCABULARY),
}
"""Database name -> the vocabulary files (under ``tagseg/data/vocabulary``) it embeds."""
DEFAULT_TEMPLATE = "{}"
ENCODE_BATCH = 2048
"""Texts handed to the encoder at once: CLIP encoders sort them by length, so larger means less padding."""


def cache_root() -> Path:
    """Where tagseg caches data: ``$TAGSEG_CACHE`` if set, else the user's cache folder."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir("tagseg"))


def default_vocabulary_path(file: str = DEFAULT_VOCABULARY) -> Path:
    """A shipped vocabulary file (one concept a line, gzipped); default: the ImageNet-21k lemmas."""
    return Path(str(resources.files("tagseg") / "data" / "vocabulary" / file))


def vocabulary_paths(name: str = "default") -> list[Path]:
    """The files of the shipped database ``name`` (a key of :data:`SHIPPED_VOCABULARIES`)."""
    if name not in SHIPPED_VOCABULARIES:
        raise DatabaseError(f"No shipped vocabulary {name!r}; choose from: {', '.join(SHIPPED_VOCABULARIES)}.")
    return [default_vocabulary_path(file) for file in SHIPPED_VOCABULARIES[name]]


def default_vocabulary(name: str = "default") -> list[str]:
    """The concept names of the shipped database ``name``, file after file."""
    names = []
    for path in vocabulary_paths(name):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            names += [line.strip() for line in handle if line.strip()]
    return names


def default_database_path(
    encoder: TextEncoder, *, cache_dir: str | os.PathLike[str] | None = None, vocabulary: str = "default"
) -> Path:
    """Where the shipped database ``vocabulary`` for ``encoder`` is cached: keyed by model, vocabulary and template."""
    contents = hashlib.sha256(b"".join(gzip.decompress(p.read_bytes()) for p in vocabulary_paths(vocabulary))).hexdigest()
    key = hashlib.sha256(f"{encoder.model_id}\n{encoder.dim}\n{DEFAULT_TEMPLATE}\n{contents}".encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.model_id).strip("_")[-60:] or "model"
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "databases"
    return root / f"{vocabulary}-{readable}-{key[:16]}"


def default_database(
    encoder: TextEncoder, *, cache_dir: str | os.PathLike[str] | None = None, progress: bool | ProgressListener = True,
    vocabulary: str = "default",
) -> PersistentTextDatabase:
    """A shipped vocabulary (``default``, or ``landmarks``) embedded with ``encoder``, built on first use and cached.

    The first call embeds the vocabulary (minutes on a CPU for CLIP ViT-L/14; ``landmarks`` adds
    4,317 names to the default's 37,000, about 12% more); later calls, in any process, open the
    cached copy. Concurrent first calls wait for one another, and a build that is interrupted
    resumes at the next call.
    """
    path = default_database_path(encoder, cache_dir=cache_dir, vocabulary=vocabulary)
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
                vocabulary_paths(vocabulary),
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
