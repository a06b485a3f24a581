"""Stage 3 of TAG: retrieve texts for each segment, turn them into candidates, pick the closest name.

Its settings are :class:`tagseg.config.NamingSettings` (the ``naming`` section). Two kinds of
names (``names``): ``"words"``, the reference's single words, or ``"phrases"``, which
adds multi-word phrases and whole name entries (:func:`tagseg.candidates.candidate_names`).

Scoring. TAG's score is the cosine between the segment and the candidate's text embedding. Two
options change it, and both leave single-word TAG untouched at their defaults:

* ``length_penalty``: each word beyond the first costs this much cosine, so that a longer phrase
  must beat its shorter rivals by a margin, not win because an extra word happens to match (see
  ``docs/names.md`` for the figures behind the default). Single words are never penalised.
* ``cased_alpha``: CaSED's blend. With ``a > 0`` the score is
  ``(1 - a) * softmax(cos(segment, c) / T) + a * softmax(cos(centroid, c) / T)`` over the segment's
  candidates ``c``, with ``T = 0.07`` (CLIP's initial temperature, which CaSED keeps) and the
  centroid the normalised mean of the retrieved texts' unit embeddings (near-duplicates once).
  CaSED weights the image term by its own alpha (0.5 by default); ``cased_alpha`` is the weight of
  the text term, so CaSED's default is ``cased_alpha=0.5`` and TAG's is 0, where the score stays
  the plain (penalised) cosine rather than a probability.

Names are matched and embedded case-insensitively: the text tower embeds a candidate's lowercase
key (CLIP's tokenizer lowercases anyway), so "Eiffel Tower" and "eiffel tower" are one candidate
with one cached embedding; the displayed form is the one most used across the call's segments.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tagseg.candidates import NameCount, candidate_names, candidate_words, drop_near_duplicates
from tagseg.config import NamingSettings
from tagseg.interfaces import Hit, TextDatabase, TextEncoder
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
    Names are cached as given; :func:`name_segments` gives lowercase keys.
    """

    def __init__(self, encoder: TextEncoder, template: str = "{}", capacity: int = 50_000) -> None:
        self.encoder = encoder
        self.template = template
        self.capacity = capacity
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the service's worker threads share one cache

    def __call__(self, names: Sequence[str]) -> torch.Tensor:
        """(len(names), dim) L2-normalised embeddings."""
        if not names:
            return torch.empty(0, self.encoder.dim)
        with self._lock:  # copy the hits now: another thread may evict them while we encode
            found = {name: self._cache[name] for name in names if name in self._cache}
        missing = list(dict.fromkeys(name for name in names if name not in found))
        if missing:
            found.update(zip(missing, self.encoder.encode([self.template.format(n) for n in missing])))
        with self._lock:
            for name in dict.fromkeys(names):
                self._cache[name] = found[name]
                self._cache.move_to_end(name)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return torch.stack([found[name] for name in names])


CASED_TEMPERATURE = 0.07
"""Softmax temperature of CaSED's blend (the inverse of CLIP's initial logit scale)."""


def retrieve(embeddings: torch.Tensor, database: TextDatabase, naming: NamingSettings = NamingSettings()) -> list[list[Hit]]:
    """Each segment embedding's (rows of ``(S, dim)``, any norm) ``top_k`` texts, in one search, near-duplicates dropped."""
    if embeddings.shape[0] == 0:
        return []
    queries = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return [drop_near_duplicates(hits, naming.duplicate_threshold) for hits in database.search(queries.cpu().numpy(), naming.top_k)]


def name_segments(
    embeddings: torch.Tensor,
    database: TextDatabase,
    candidate_embeddings: CandidateEmbeddings,
    naming: NamingSettings = NamingSettings(),
    retrieved: list[list[Hit]] | None = None,
) -> list[Naming]:
    """Name each segment embedding (rows of ``(S, dim)``, any norm) under the ``naming`` settings.

    Each segment retrieves ``top_k`` texts (:func:`retrieve`; or takes them from ``retrieved``, e.g.
    one search for the segments of several images), near-duplicates count once, the CaSED rules turn
    them into candidates (``names``: ``"words"`` or ``"phrases"``), and the candidate with the
    highest score wins (see the module notes: cosine with the segment, less ``length_penalty`` per
    extra word, blended with the retrieved texts' centroid by ``cased_alpha``). Candidates are
    scored only against their own segment.
    """
    if embeddings.shape[0] == 0:
        return []
    queries = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    kept_hits = retrieve(embeddings, database, naming) if retrieved is None else retrieved
    options = {"min_count": naming.min_count, "pos_filter": naming.pos_filter}
    if naming.names == "words":
        segment_names = [candidate_words([hit.text for hit in hits], **options) for hits in kept_hits]
    else:
        segment_names = _shared_forms([candidate_names([hit.text for hit in hits], **options) for hits in kept_hits])
    vocabulary = list(dict.fromkeys(n.key for segment in segment_names for n in segment))
    vocabulary_vectors = candidate_embeddings(vocabulary)
    index = {key: i for i, key in enumerate(vocabulary)}
    namings = []
    for query, hits, candidates_found in zip(queries, kept_hits, segment_names):
        vectors = vocabulary_vectors[[index[n.key] for n in candidates_found]]
        penalties = [naming.length_penalty * (n.length - 1) for n in candidates_found]
        scores = [s - p for s, p in zip((vectors @ query.to(vectors.dtype)).tolist(), penalties)]
        if naming.cased_alpha > 0.0:
            centroid = _centroid(hits, candidate_embeddings.encoder).to(vectors.dtype)
            text_scores = [s - p for s, p in zip((vectors @ centroid).tolist(), penalties)]
            scores = _blend(scores, text_scores, naming.cased_alpha)
        candidates = sorted(
            (Candidate(n.name, s, n.count) for n, s in zip(candidates_found, scores)),
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


def _shared_forms(segment_names: list[list[NameCount]]) -> list[list[NameCount]]:
    """Give every key one displayed form across segments (the most used, first seen on ties)."""
    uses: dict[str, Counter[str]] = {}
    for segment in segment_names:
        for name in segment:
            uses.setdefault(name.key, Counter())[name.name] += 1
    form = {key: counts.most_common(1)[0][0] for key, counts in uses.items()}
    return [[NameCount(form[n.key], n.count) for n in segment] for segment in segment_names]


def _centroid(hits: Sequence[Hit], encoder: TextEncoder) -> torch.Tensor:
    """Unit mean of the retrieved texts' unit embeddings: stored vectors if all hits have them."""
    if hits and all(hit.vector is not None for hit in hits):
        vectors = torch.from_numpy(np.stack([np.asarray(hit.vector, dtype=np.float32).ravel() for hit in hits]))
    else:
        vectors = encoder.encode([hit.text for hit in hits]) if hits else torch.zeros(1, encoder.dim)
    mean = torch.nn.functional.normalize(vectors.float(), dim=-1).mean(dim=0)
    return torch.nn.functional.normalize(mean, dim=0)


def _blend(image_scores: list[float], text_scores: list[float], alpha: float) -> list[float]:
    """CaSED's mix of the two softmax distributions over a segment's candidates."""
    image = torch.tensor(image_scores, dtype=torch.float64) / CASED_TEMPERATURE
    text = torch.tensor(text_scores, dtype=torch.float64) / CASED_TEMPERATURE
    return ((1.0 - alpha) * image.softmax(0) + alpha * text.softmax(0)).tolist()
