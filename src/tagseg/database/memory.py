"""A text database held in memory: a list of texts and their embeddings, searched exactly."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from tagseg.errors import DatabaseError
from tagseg.interfaces import Hit, TextEncoder


class InMemoryTextDatabase:
    """Exact inner-product search over texts embedded once by a :class:`TextEncoder`.

    Suits vocabularies and caption lists up to some hundred thousand entries; the persistent
    database in :mod:`tagseg.database` serves larger and updatable ones behind the same interface.
    """

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, model_id: str) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(texts) != vectors.shape[0]:
            raise DatabaseError(
                f"{len(texts)} texts but vectors of shape {vectors.shape}: they must match one to one."
            )
        self.texts = list(texts)
        self.vectors = vectors
        self.dim = int(vectors.shape[1])
        self.model_id = model_id

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
        return cls(unique, np.concatenate(chunks), encoder.model_id)

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
