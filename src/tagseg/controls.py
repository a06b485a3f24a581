"""Naming controls, applied after :func:`tagseg.naming.name_segments`; every one is off by default.

Their settings are :class:`tagseg.config.ControlSettings` (the ``controls`` section).

In order, per segment:

1. **Vocabulary** (``vocabulary``): with ``vocabulary_mode="closest"`` retrieval runs as usual
   and every candidate name becomes the allowed word closest to it by text embedding
   (:class:`tagseg.label_space.LabelSpace`; a word of the list, in any case, maps to itself); with
   ``"direct"`` the retrieved candidates are ignored and the allowed words themselves compete.
2. **Aliases** (``aliases``, name -> canonical name; applied before the vocabulary) and the
   **blocklist** (``blocklist``: names never given, before or after aliasing or mapping).
3. Names that became one keep the best score among them (the cosine of the segment embedding
   with the original name's text embedding) and the sum of their counts; the best wins.
4. **Prefer objects** (``prefer_objects``): when the winner is a scene or part word
   (:data:`SCENE_WORDS`: "room", "scene", "view" ...) and another candidate scores within
   ``prefer_objects_margin`` of it, that candidate wins instead.
5. **Abstain** (``abstain_threshold``): a winner scoring below it is replaced by
   ``unknown_label`` (the candidates stay as evidence). ``-1`` (the default) never abstains.
"""

from __future__ import annotations

import dataclasses

import torch

from tagseg.config import ControlSettings
from tagseg.label_space import LabelSpace
from tagseg.naming import CandidateEmbeddings, Naming
from tagseg.result import Candidate

__all__ = ["SCENE_WORDS", "apply_controls", "controls_active"]

SCENE_WORDS = frozenset(
    "room scene view background foreground image picture photo photograph area place space setting "
    "scenery landscape interior exterior inside outside side part piece section portion top bottom "
    "front back middle center centre corner edge detail closeup thing object stuff surface".split()
)
"""Words that describe a whole scene, a viewpoint or a part rather than an object (last word of a name)."""


def controls_active(controls: ControlSettings) -> bool:
    """Whether any naming control is switched on."""
    return bool(controls.vocabulary or controls.aliases or controls.blocklist or controls.prefer_objects) or (
        controls.abstain_threshold > -1.0
    )


def apply_controls(
    namings: list[Naming], embeddings: torch.Tensor, candidate_embeddings: CandidateEmbeddings, controls: ControlSettings
) -> list[Naming]:
    """The namings of segments with embeddings ``embeddings`` (S, dim) after the ``controls``."""
    if not controls_active(controls) or not namings:
        return namings
    queries = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    vocabulary = list(dict.fromkeys(controls.vocabulary))
    direct = bool(vocabulary) and controls.vocabulary_mode == "direct"
    blocked = set(controls.blocklist)
    sources = [
        _scored(vocabulary, query, candidate_embeddings) if direct else naming.candidates
        for query, naming in zip(queries, namings)
    ]
    closest: dict[str, str] = {}
    if vocabulary and not direct:
        names = sorted({controls.aliases.get(c.name, c.name) for candidates in sources for c in candidates})
        matches = LabelSpace(vocabulary, candidate_embeddings).map(names)
        closest = {name: match.label or name for name, match in zip(names, matches)}
    results = []
    for naming, candidates in zip(namings, sources):
        merged: dict[str, Candidate] = {}
        for candidate in candidates:
            name = controls.aliases.get(candidate.name, candidate.name)
            final = closest.get(name, name)
            if blocked & {candidate.name, name, final}:
                continue
            best = merged.get(final, Candidate(final, candidate.score, 0))
            merged[final] = Candidate(final, max(best.score, candidate.score), best.count + candidate.count)
        candidates = sorted(merged.values(), key=lambda c: -c.score)
        if controls.prefer_objects:
            candidates = _prefer_objects(candidates, controls.prefer_objects_margin)
        if candidates and candidates[0].score >= controls.abstain_threshold:
            label, score = candidates[0].name, candidates[0].score
        else:
            label, score = controls.unknown_label, candidates[0].score if candidates else 0.0
        results.append(dataclasses.replace(naming, label=label, score=score, candidates=candidates))
    return results


def _scored(names: list[str], query: torch.Tensor, candidate_embeddings: CandidateEmbeddings) -> list[Candidate]:
    """``names`` as candidates (count 0) with their cosine against the segment."""
    vectors = candidate_embeddings(names)
    scores = (vectors @ query.to(vectors.dtype)).tolist()
    return [Candidate(n, s, 0) for n, s in zip(names, scores)]


def _prefer_objects(candidates: list[Candidate], margin: float) -> list[Candidate]:
    """Move the best non-scene candidate first when the winner is a scene word and it is within ``margin``."""
    if not candidates or not _is_scene_word(candidates[0].name):
        return candidates
    for i, candidate in enumerate(candidates[1:], start=1):
        if candidate.score < candidates[0].score - margin:
            break
        if not _is_scene_word(candidate.name):
            return [candidate, *candidates[:i], *candidates[i + 1 :]]
    return candidates


def _is_scene_word(name: str) -> bool:
    words = name.split()
    return bool(words) and words[-1].lower() in SCENE_WORDS
