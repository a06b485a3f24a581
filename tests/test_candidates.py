"""CaSED's candidate rules: each case below fails if its rule is removed."""

from __future__ import annotations

import inflect
import numpy as np
import pytest

from hashseed_support import json_under_other_hash_seed

from tagseg.candidates import (
    FALLBACK_WORD,
    IMAGE_STOP_WORDS,
    NameCount,
    candidate_names,
    candidate_words,
    drop_near_duplicates,
    is_name_entry,
)
from tagseg.config import NamingSettings
from tagseg.database.default import default_vocabulary
from tagseg.errors import ConfigError
from tagseg.interfaces import Hit


def words(texts: list[str], **options) -> list[tuple[str, int]]:
    """Candidates as (word, count) pairs; the POS filter is off unless a test turns it on."""
    options.setdefault("pos_filter", False)
    return [(c.name, c.count) for c in candidate_words(texts, **options)]


# --- cleaning rules, in CaSED's order -----------------------------------------------------------


def test_markup_is_dropped_and_separates_words():
    assert words(["<span>kitten</span> on a sofa", "<span>kitten</span>"]) == [("kitten", 2)]
    assert words(["dog<br>cat", "dog<br/>cat"]) == [("dog", 2), ("cat", 2)]


def test_markup_does_not_span_captions():
    # Joined into one text, "a < b ... c > d" would be one <...> token and swallow "zebra".
    assert words(["zebra < herd", "zebra > herd"]) == [("zebra", 2), ("herd", 2)]


def test_urls_are_dropped():
    texts = ["dog http://shop.example.com/puppy.html", "dog https://shop.example.com/puppy", "dog www.shop.net"] * 2
    assert words(texts) == [("dog", 6)]


def test_special_characters_are_dropped_before_file_extensions():
    # "#" goes first, so ".cute" then reads as an extension; otherwise "kittencute" would remain.
    assert words(["Cute kitten.#cute", "kitten.#cute"]) == [("kitten", 2)]


def test_file_extensions_are_dropped():
    assert words(["dog.jpg", "dog.png", "download dog.jpeg"]) == [("dog", 3)]


def test_underscores_and_hyphens_separate_words():
    assert words(["golden_retriever", "golden-retriever"]) == [("golden", 2), ("retriever", 2)]


def test_short_words_are_dropped():
    assert words(["ox ox cat", "ox cat"]) == [("cat", 2)]


def test_non_letters_are_dropped():
    assert words(["route66 in 2019", "Route66 2019"]) == [("route", 2)]
    # Fewer than three letters left once digits go: no fragment survives.
    assert words(["4x4 cat", "4x4 cat"]) == [("cat", 2)]


def test_accents_are_folded_not_deleted():
    assert words(["Café terrace", "café"]) == [("cafe", 2)]


def test_lowercase():
    assert words(["Dog", "dog", "DOG"]) == [("dog", 3)]


def test_plurals_are_singularised():
    assert words(["dogs", "dog", "glasses"], min_count=1) == [("dog", 2), ("glass", 1)]


@pytest.mark.parametrize("word", ["glass", "bus", "tennis", "berries", "potatoes"])
def test_singularisation_exceptions(word):
    # inflect alone would give bu, tenni, berry, potato.
    assert words([word, word]) == [(word, 2)]


def test_singular_never_shrinks_below_three_letters():
    assert words(["gas", "gas"]) == [("gas", 2)]


def test_stop_words_are_dropped_as_whole_words():
    texts = ["dog photo", "dog photos", "Image of a dog", "profile pictures", "photographer photographer"]
    assert words(texts) == [("dog", 3), ("photographer", 2)]
    assert words(["objects", "objects", "dog"]) == [("dog", 1)]


def test_custom_stop_words():
    assert words(["dog photo", "dog photo"], stop_words=frozenset({"dog"})) == [("photo", 2)]
    assert "object" in IMAGE_STOP_WORDS


def test_min_count_keeps_frequent_words():
    assert words(["cat dog", "dog bird"]) == [("dog", 2)]
    assert words(["cat dog", "dog bird"], min_count=1) == [("dog", 2), ("cat", 1), ("bird", 1)]


def test_min_count_falls_back_to_the_highest_count():
    assert words(["cat", "bird"]) == [("cat", 1), ("bird", 1)]
    assert words(["cat cat dog dog bird bird bird"], min_count=5) == [("bird", 3)]


def test_min_count_must_be_positive():
    with pytest.raises(ConfigError, match="min_count=0"):
        NamingSettings(min_count=0)


def test_order_is_count_then_first_occurrence():
    texts = ["zebra apple mango", "mango zebra", "apple mango kiwi kiwi"]
    assert words(texts) == [("mango", 3), ("zebra", 2), ("apple", 2), ("kiwi", 2)]


def test_empty_result_falls_back_to_object():
    assert candidate_words([]) == [NameCount(FALLBACK_WORD, 0)]
    assert candidate_words(["", "  "]) == [NameCount("object", 0)]
    assert candidate_words(["photo", "an image"], pos_filter=False) == [NameCount("object", 0)]


# --- part-of-speech filter ----------------------------------------------------------------------


def test_pos_filter_drops_verbs_prepositions_and_determiners():
    texts = [
        "The dog runs across the grass with a ball",
        "The dog runs after the ball on the grass",
        "A dog is sitting on the grass with the ball",
    ]
    unfiltered = dict(words(texts))
    assert {"the", "run", "with"} <= set(unfiltered)  # present without the filter
    assert words(texts, pos_filter=True) == [("dog", 3), ("grass", 3), ("ball", 3)]


def test_pos_filter_keeps_adjectives_gerunds_and_participles():
    texts = ["a red car parked outside", "a red car parked by the road", "the running man", "the running man"]
    kept = dict(words(texts, pos_filter=True))
    assert {"red", "car", "parked", "running", "man"} <= set(kept)


def test_word_kept_if_any_occurrence_is_accepted():
    # "light" is an adjective in the first caption and a verb in the second.
    texts = ["a light blue sky", "they light candles", "light"]
    assert ("light", 3) in words(texts, pos_filter=True)


def _vocabulary_nouns(count: int) -> list[str]:
    """``count`` one-word, lowercase, regular-looking nouns spread over the shipped vocabulary."""
    plain = [
        word
        for word in default_vocabulary()
        if word.isalpha() and word.islower() and len(word) >= 4 and word[-1] not in "sxzhyo"
        and word not in IMAGE_STOP_WORDS
    ]
    return plain[:: len(plain) // count][:count]


def test_one_word_texts_of_real_nouns_are_candidates():
    # Tagged alone, spaCy's small tagger calls many of these verbs (owl, deer, train...).
    nouns = _vocabulary_nouns(300)
    found = candidate_words(nouns, min_count=1)
    assert sorted(c.name for c in found) == sorted(nouns)


def test_one_word_plurals_of_real_nouns_are_candidates():
    engine = inflect.engine()
    # Plurals that CaSED's rule singularises (not -ss/-us/-is/-ies/-oes) back to the noun itself.
    nouns = [
        noun for noun in _vocabulary_nouns(300)
        if not (noun + "s").endswith(("ss", "us", "is", "ies", "oes")) and engine.singular_noun(noun + "s") == noun
    ]
    assert len(nouns) > 250
    found = candidate_words([noun + "s" for noun in nouns], min_count=1)
    assert sorted(c.name for c in found) == sorted(nouns)
    assert words(["rainbows", "soups", "pandas", "kites"], pos_filter=True) == [
        ("rainbow", 1), ("soup", 1), ("panda", 1), ("kite", 1)
    ]


def test_one_word_texts_the_lexicon_rules_out_as_nouns_are_not_candidates():
    # Adverbs and verbs only (WordNet knows them, not as nouns), and function words.
    assert words(["quickly", "seldom", "elapse", "the", "and", "whose"], pos_filter=True) == [(FALLBACK_WORD, 0)]


def test_contractions_are_never_candidates():
    texts = ["cannot", "gonna", "you're", "you\u2019re", "dont", "I cannot find the dog", "gonna see the dog"]
    assert words(texts, pos_filter=True) == [("dog", 2)]
    assert words(texts, min_count=1) == [("the", 2), ("dog", 2), ("find", 1), ("see", 1)]
    assert "cannot" not in [c.key for c in candidate_names(texts)]
    assert not any(is_name_entry(text) for text in ["cannot", "gonna", "you're", "you're welcome"])
    assert is_name_entry("owl")


def test_result_is_deterministic_across_hash_seeds():
    # This process and a child with another PYTHONHASHSEED must agree (the reference used a set).
    texts = ["sheep cow horse goat", "goat horse cow sheep", "a red barn near the sheep", "red barn cow"]
    program = (
        "import json, sys; from tagseg.candidates import candidate_words; "
        "print(json.dumps([[c.name, c.count] for c in candidate_words(json.loads(sys.argv[1]))]))"
    )
    here = [[c.name, c.count] for c in candidate_words(texts)]
    assert json_under_other_hash_seed(program, texts) == here
    assert here == [["sheep", 3], ["cow", 3], ["horse", 2], ["goat", 2], ["red", 2], ["barn", 2]]


# --- near-duplicate hits ------------------------------------------------------------------------


def _hit(text: str, vector: list[float] | None) -> Hit:
    return Hit(text=text, similarity=0.5, vector=None if vector is None else np.array(vector, np.float32))


def test_near_duplicates_keep_the_first_of_a_group():
    hits = [_hit("a dog", [1, 0, 0]), _hit("a cat", [0, 1, 0]), _hit("a dog.", [0.99, 0.05, 0])]
    assert [h.text for h in drop_near_duplicates(hits)] == ["a dog", "a cat"]


def test_near_duplicates_use_cosine_not_dot_product():
    hits = [_hit("small", [0.1, 0.0]), _hit("large", [10.0, 0.2])]
    assert [h.text for h in drop_near_duplicates(hits)] == ["small"]


def test_near_duplicate_threshold_is_inclusive():
    cosine = 0.94
    second = [cosine, float(np.sqrt(1 - cosine**2))]
    hits = [_hit("first", [1.0, 0.0]), _hit("second", second)]
    assert len(drop_near_duplicates(hits, threshold=cosine - 1e-6)) == 1
    assert len(drop_near_duplicates(hits, threshold=cosine + 1e-6)) == 2


def test_near_duplicate_groups_are_transitive():
    # a~b and b~c (cos 0.97), but a and c are only at cos 0.88: one group, one hit kept.
    angle = np.arccos(0.97)
    hits = [_hit(t, [np.cos(k * angle), np.sin(k * angle)]) for k, t in enumerate("abc")]
    assert [h.text for h in drop_near_duplicates(hits)] == ["a"]


def test_hits_without_vectors_are_deduplicated_by_exact_text():
    hits = [_hit("dog", None), _hit("Dog", None), _hit("dog", None), _hit("cat", [1, 0]), _hit("cat", [0, 1])]
    assert [h.text for h in drop_near_duplicates(hits)] == ["dog", "Dog", "cat"]


def test_zero_vector_is_no_ones_duplicate():
    hits = [_hit("blank", [0, 0]), _hit("dog", [1, 0]), _hit("cat", [0, 1])]
    assert [h.text for h in drop_near_duplicates(hits)] == ["blank", "dog", "cat"]
    assert drop_near_duplicates([]) == []
