"""Reading and changing the text database behind a running :class:`~tagseg.pipeline.TAG`.

Segmentations hold the read side of a lock and changes the write side, so a request never sees
a half-made change, and the request after a change retrieves from the changed database.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from tagseg.database import default_database_path
from tagseg.errors import DatabaseError
from tagseg.interfaces import UpdatableTextDatabase
from tagseg.pipeline import TAG


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before readers that come after it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writers_waiting = 0
        self._writing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writing and self._writers_waiting == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            self._condition.wait_for(lambda: not self._writing and self._readers == 0)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


class DatabaseAccess:
    """Search, add and remove texts in ``tag.database``.

    A database that implements :class:`~tagseg.interfaces.UpdatableTextDatabase` is changed in
    place; other databases, and the cached copy of the shipped default vocabulary (shared by every
    run on the machine), are read-only.
    """

    def __init__(self, tag: TAG) -> None:
        self.tag = tag
        self.lock = ReadWriteLock()

    @property
    def updatable(self) -> bool:
        """Whether this database can take added and removed texts."""
        database = self.tag.database
        if not isinstance(database, UpdatableTextDatabase):
            return False
        location = getattr(database, "path", None)
        return location is None or Path(location).resolve() != default_database_path(self.tag.text_encoder).resolve()

    def info(self) -> dict[str, Any]:
        """Kind, size and text model of the database."""
        database = self.tag.database
        return {
            "kind": type(database).__name__,
            "size": len(database),
            "model_id": database.model_id,
            "dim": database.dim,
            "updatable": self.updatable,
        }

    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        """The ``k`` stored texts closest to ``query`` in the text space."""
        with self.lock.reading():
            database = self.tag.database
            template = getattr(database, "template", "{}")
            vector = self.tag.text_encoder.encode([template.format(query)]).numpy()
            hits = database.search(vector, k)[0]
        return [{"text": h.text, "similarity": round(h.similarity, 6)} for h in hits]

    def add(self, texts: Sequence[str]) -> int:
        """Store ``texts`` (blank ones and ones already stored skipped); returns how many were added."""
        with self.lock.writing():
            return self._writable().add_texts(texts, self.tag.text_encoder, source="serve").added

    def remove(self, texts: Sequence[str]) -> int:
        """Remove stored ``texts``; returns how many were removed."""
        with self.lock.writing():
            return self._writable().remove(texts)

    def _writable(self) -> UpdatableTextDatabase:
        database = self.tag.database
        if not self.updatable:
            raise DatabaseError(f"The {type(database).__name__} behind this service is read-only.")
        assert isinstance(database, UpdatableTextDatabase)
        return database
