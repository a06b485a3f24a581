"""A text database held in memory: a list of texts and their embeddings, searched exactly."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from tagseg.errors import DatabaseError
from tagseg.interfaces import Hit, TextEncoder, UpdateReport


class InMemoryTextDatabase:
    """Exact inner-product search over texts embedded once by a :class:`TextEncoder`.

    Suits vocabularies and caption lists up to some hundred thousand entries; the persistent
    database in :mod:`tagseg.database` serves larger ones, kept on disk, behind the same interface.
    Both take added and removed texts in place (:class:`~tagseg.interfaces.UpdatableTextDatabase`);
    ``template`` is the prompt the texts were embedded with.
    """

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, model_id: str, template: str = "{}") -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(texts) != vectors.shape[0]:
            raise DatabaseError(
                f"{len(texts)} texts but vectors of shape {vectors.shape}: they must match one to one."
            )
        self.texts = list(texts)
        self.vectors = vectors
        self.dim = int(vectors.shape[1])
        self.model_id = model_id
        self.template = template

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], encoder: TextEncoder, *, template: str = "{}", batch_size: int = 256
    ) -> "InMemoryTextDatabase":
        """Embed ``texts`` (blank ones and exact duplicates dropped) with ``encoder``."""
        unique = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
        if not unique:
            raise DatabaseError("Cannot build a text database from no texts.")
        chunks = [
            encoder.encode([template.format(t) for t in unique[i : i + batch_size]]).numpy()
            for i in range(0, len(unique), batch_size)
        ]
        return cls(unique, np.concatenate(chunks), encoder.model_id, template)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The ``k`` texts most similar to each query row, best first, with their vectors."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise DatabaseError(f"Query dimension {queries.shape[1]} does not match the database's {self.dim}.")
        k = min(k, len(self.texts))
        scores = queries @ self.vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for row, candidates in zip(scores, top):
            ordered = candidates[np.argsort(-row[candidates], kind="stable")]
            results.append(
                [Hit(self.texts[i], float(row[i]), int(i), self.vectors[i]) for i in ordered]
            )
        return results

    def add_texts(self, texts: Iterable[str], encoder: TextEncoder, *, source: str = "added") -> UpdateReport:
        """Embed and store ``texts`` (stripped; blank ones and those already stored skipped).

        ``source`` is accepted for the :class:`~tagseg.interfaces.UpdatableTextDatabase` seam; memory keeps no sources.
        """
        if encoder.model_id != self.model_id or encoder.dim != self.dim:
            raise DatabaseError(
                f"The database was embedded with {self.model_id} ({self.dim}-d); "
                f"texts embedded with {encoder.model_id} ({encoder.dim}-d) cannot join it."
            )
        stripped = [t.strip() if isinstance(t, str) else "" for t in texts]
        unique = list(dict.fromkeys(t for t in stripped if t))
        stored = set(self.texts)
        fresh = [t for t in unique if t not in stored]
        blank = stripped.count("")
        if fresh:
            vectors = encoder.encode([self.template.format(t) for t in fresh]).numpy().astype(np.float32)
            self.texts, self.vectors = self.texts + fresh, np.concatenate([self.vectors, vectors])
        return UpdateReport(added=len(fresh), duplicates=len(stripped) - blank - len(fresh), blank=blank)

    def remove(self, texts: Iterable[str] = ()) -> int:
        """Remove the stored ``texts``; returns how many were removed. The database never becomes empty."""
        unwanted = {t.strip() for t in texts}
        keep = [i for i, t in enumerate(self.texts) if t not in unwanted]
        if not keep:
            raise DatabaseError("Removing these texts would leave the database empty; keep at least one.")
        removed = len(self.texts) - len(keep)
        if removed:
            self.texts, self.vectors = [self.texts[i] for i in keep], self.vectors[keep]
        return removed
