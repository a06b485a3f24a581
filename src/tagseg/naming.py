"""Stage 3 of TAG: retrieve texts for each segment, turn them into candidates, pick the closest name."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from tagseg.candidates import candidate_words, drop_near_duplicates
from tagseg.interfaces import TextDatabase, TextEncoder
from tagseg.result import Candidate, Retrieved


@dataclass(frozen=True)
class Naming:
    """The name chosen for one segment and the evidence behind it."""

    label: str
    score: float
    candidates: list[Candidate]
    retrieved: list[Retrieved]


class CandidateEmbeddings:
    """Embeds candidate names with a prompt template, remembering the most recent ones.

    Candidate words repeat across segments and images, so a cache saves most text-tower calls.
    """

    def __init__(self, encoder: TextEncoder, template: str = "{}", capacity: int = 50_000) -> None:
        self.encoder = encoder
        self.template = template
        self.capacity = capacity
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, names: Sequence[str]) -> torch.Tensor:
        """(len(names), dim) L2-normalised embeddings."""
        missing = list(dict.fromkeys(n for n in names if n not in self._cache))
        if missing:
            vectors = self.encoder.encode([self.template.format(n) for n in missing])
            for name, vector in zip(missing, vectors):
                self._cache[name] = vector
        for name in names:
            self._cache.move_to_end(name)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        if not names:
            return torch.empty(0, self.encoder.dim)
        return torch.stack([self._cache[n] for n in names])


def name_segments(
    embeddings: torch.Tensor,
    database: TextDatabase,
    candidate_embeddings: CandidateEmbeddings,
    *,
    top_k: int = 10,
    duplicate_threshold: float = 0.94,
    min_count: int = 2,
    pos_filter: bool = True,
) -> list[Naming]:
    """Name each segment embedding (rows of ``(S, dim)``, any norm).

    Each segment retrieves ``top_k`` texts, near-duplicates count once, the CaSED rules turn them
    into candidate words, and the candidate whose text embedding has the highest cosine with the
    segment wins; that cosine is the score. Candidates are scored only against their own segment.
    """
    if embeddings.shape[0] == 0:
        return []
    queries = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    all_hits = database.search(queries.cpu().numpy(), top_k)
    kept_hits = [drop_near_duplicates(hits, duplicate_threshold) for hits in all_hits]
    words = [
        candidate_words([hit.text for hit in hits], min_count=min_count, pos_filter=pos_filter)
        for hits in kept_hits
    ]
    vocabulary = list(dict.fromkeys(w.word for segment_words in words for w in segment_words))
    vocabulary_vectors = candidate_embeddings(vocabulary)
    index = {word: i for i, word in enumerate(vocabulary)}
    namings = []
    for query, hits, segment_words in zip(queries, kept_hits, words):
        rows = [index[w.word] for w in segment_words]
        scores = (vocabulary_vectors[rows] @ query.to(vocabulary_vectors.dtype)).tolist()
        candidates = sorted(
            (Candidate(w.word, s, w.count) for w, s in zip(segment_words, scores)),
            key=lambda c: -c.score,
        )
        namings.append(
            Naming(
                label=candidates[0].name,
                score=candidates[0].score,
                candidates=candidates,
                retrieved=[Retrieved(h.text, h.similarity) for h in hits],
            )
        )
    return namings

