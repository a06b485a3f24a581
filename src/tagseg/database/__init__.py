"""Text databases that segments retrieve their names from.

- :class:`InMemoryTextDatabase`: a list of texts embedded in memory (tests, small vocabularies).
- :class:`PersistentTextDatabase`: a folder on disk, built from files.

Both implement :class:`~tagseg.interfaces.UpdatableTextDatabase`: they take added and removed texts in place.
- :class:`ClipRetrievalDatabase`: a clip-retrieval folder (TAG/CaSED releases), read-only.
- :func:`default_database`: the shipped vocabulary, embedded on first use and cached.
"""

from __future__ import annotations

import os
from pathlib import Path

from tagseg.database.build import BuildReport, build_database
from tagseg.database.clip_retrieval import ClipRetrievalDatabase, is_clip_retrieval_folder
from tagseg.database.default import default_database, default_database_path, default_vocabulary
from tagseg.database.index import INDEX_KINDS
from tagseg.database.memory import InMemoryTextDatabase
from tagseg.database.sources import open_source
from tagseg.database.store import DatabaseInfo, PersistentTextDatabase
from tagseg.interfaces import TextDatabase, TextEncoder, UpdatableTextDatabase, UpdateReport


def open_database(
    path: str | os.PathLike[str],
    *,
    encoder: TextEncoder | None = None,
    model_id: str | None = None,
    dim: int | None = None,
) -> TextDatabase:
    """Open a database folder, tagseg's own or clip-retrieval's, checking it matches the text model.

    The model is ``encoder``'s, or ``model_id`` and ``dim`` (either may be left out to skip that check).
    """
    path = Path(path)
    if encoder is not None:
        model_id, dim = encoder.model_id, encoder.dim
    if is_clip_retrieval_folder(path):
        if model_id is None:
            return ClipRetrievalDatabase(path, dim=dim)
        return ClipRetrievalDatabase(path, model_id=model_id, dim=dim)
    return PersistentTextDatabase.open(path, model_id=model_id, dim=dim)


__all__ = [
    "INDEX_KINDS",
    "BuildReport",
    "ClipRetrievalDatabase",
    "DatabaseInfo",
    "InMemoryTextDatabase",
    "PersistentTextDatabase",
    "UpdatableTextDatabase",
    "UpdateReport",
    "build_database",
    "default_database",
    "default_database_path",
    "default_vocabulary",
    "open_database",
    "open_source",
]
