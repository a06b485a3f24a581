"""Multi-word names (names="phrases"): phrases, name entries, case, the length prior, CaSED's blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hashseed_support import json_under_other_hash_seed

from tagseg import TAG, toy
from tagseg.candidates import NameCount, candidate_names, candidate_phrases, is_name_entry
from tagseg.config import NamingSettings, preset
from tagseg.errors import ConfigError
from tagseg.interfaces import Hit
from tagseg.naming import CandidateEmbeddings, name_segments
from toy_support import named_iou

STREET = [
    "a red fire hydrant on the sidewalk",
    "fire hydrants in New York City",
    "a yellow fire hydrant near the road",
    "the Eiffel Tower at night",
    "the Eiffel tower from the river",
    "Eiffel Tower in Paris",
    "my dog's ball on the grass",
    "paris at night",
]


def pairs(names: list[NameCount]) -> list[tuple[str, int]]:
    return [(n.name, n.count) for n in names]


# --- phrases from retrieved texts ---------------------------------------------------------------


def test_phrases_are_counted_normalised_and_cased():
    # Plural "hydrants" is singular, articles go, "tower"/"Tower" is one phrase shown with its
    # proper-noun case, and "Paris" reaches min_count only across cases.
    assert pairs(candidate_phrases(STREET)) == [("fire hydrant", 3), ("Eiffel Tower", 3), ("Paris", 2)]


def test_phrases_below_min_count_are_dropped_and_min_count_one_keeps_them():
    found = dict(pairs(candidate_phrases(STREET, min_count=1)))
    assert {"red fire hydrant", "yellow fire hydrant", "New York City", "New York"} <= set(found)
    assert found["New York City"] == 1
    assert "red fire hydrant" not in dict(pairs(candidate_phrases(STREET)))


def test_possessives_determiners_and_conjunctions_are_not_in_phrases():
    found = dict(pairs(candidate_phrases(["my dog's red ball", "the dog's red ball", "a red and white kite"] * 2)))
    assert found == {"red ball": 4, "white kite": 2}
    assert not any("dog" in name or "and" in name for name in found)


def test_proper_noun_runs_join_across_of():
    found = dict(pairs(candidate_phrases(["a view of the Statue of Liberty at dusk"] * 2)))
    assert found["Statue of Liberty"] == 2


def test_phrases_ending_in_stop_words_are_dropped():
    assert candidate_phrases(["a stock photo of a cat", "stock photos of a cat"]) == []


def test_phrases_with_digits_split_at_the_digit():
    found = dict(pairs(candidate_phrases(["a 4x4 red car on route 66", "the red car on route 66"])))
    assert found == {"red car": 2}


# --- whole name entries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["golden retriever", "Labrador retriever", "fire hydrant", "Eiffel Tower", "Leaning Tower of Pisa", "Aaron's rod", "fly"],
)
def test_short_names_are_entries(text):
    assert is_name_entry(text)


@pytest.mark.parametrize(
    "text", ["a dog", "Eiffel Tower at night", "dog runs", "1st lieutenant", "red blue green white black", ""]
)
def test_captions_are_not_entries(text):
    assert not is_name_entry(text)


def test_name_entries_are_candidates_whole_and_not_split():
    texts = ["golden retriever", "Labrador retriever", "golden retriever", "a retriever on the grass"]
    found = pairs(candidate_names(texts))
    # The entries are not split: "golden" never becomes a word, and "retriever" counts once.
    assert found == [("retriever", 1), ("grass", 1), ("golden retriever", 2), ("Labrador retriever", 1)]


def test_words_phrases_and_entries_merge_case_insensitively():
    names = candidate_names(STREET + ["Eiffel Tower"])
    found = dict(pairs(names))
    assert found["Eiffel Tower"] == 3  # phrase count 3, entry count 1: the larger count is kept
    assert found["Eiffel"] == 3 and found["Paris"] == 2  # words shown with their proper-noun case
    assert len({n.key for n in names}) == len(names)
    assert [n.key for n in names][:2] == ["fire", "hydrant"]  # words first, in CaSED's order


def test_fallback_only_when_nothing_at_all_is_found():
    assert candidate_names(["photo", "an image"], pos_filter=False) == [NameCount("object", 0)]
    assert pairs(candidate_names(["Colosseum"])) == [("Colosseum", 1)]


def test_names_are_deterministic_across_hash_seeds():
    program = (
        "import json, sys; from tagseg.candidates import candidate_names; "
        "print(json.dumps([[n.name, n.count] for n in candidate_names(json.loads(sys.argv[1]))]))"
    )
    assert json_under_other_hash_seed(program, STREET) == [[n.name, n.count] for n in candidate_names(STREET)]


# --- scoring: names, length prior, CaSED's blend -------------------------------------------------


class _Database:
    """Returns the given hits for every query (vectors from the toy text tower)."""

    def __init__(self, texts: list[str], encoder: toy.ToyTextEncoder) -> None:
        self.dim, self.model_id = encoder.dim, encoder.model_id
        self.hits = [Hit(t, 0.5, i, v.numpy()) for i, (t, v) in enumerate(zip(texts, encoder.encode(texts)))]

    def __len__(self) -> int:
        return len(self.hits)

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        return [self.hits[:k] for _ in queries]


def _axes(encoder: toy.ToyTextEncoder, weights: dict[str, float]) -> torch.Tensor:
    vector = torch.zeros(1, encoder.dim)
    for name, weight in weights.items():
        vector += weight * encoder.encode([name])
    return vector


def naming(**values) -> NamingSettings:
    """Naming settings without the length penalty unless a test sets one, so that scores are plain cosines."""
    return NamingSettings(**{"length_penalty": 0.0, **values})


def test_words_mode_is_the_reference_and_phrases_mode_names_the_shade():
    encoder = toy.ToyTextEncoder(shades=True)
    database = _Database(["a sky blue kite", "the sky blue kite", "sky blue paint", "a blue car"], encoder)
    segment = _axes(encoder, {"sky blue": 1.0, "blue": 0.1})
    embed = CandidateEmbeddings(encoder)
    words = name_segments(segment, database, embed)[0]
    assert words.label == "blue" and {c.name for c in words.candidates} == {"sky", "blue", "kite"}
    phrases = name_segments(segment, database, embed, naming(names="phrases"))[0]
    assert phrases.label == "sky blue"
    assert phrases.score == pytest.approx(float(torch.nn.functional.normalize(segment, dim=-1)[0] @ encoder.encode(["sky blue"])[0]))


def test_length_penalty_stops_a_phrase_winning_by_chance():
    # A sky blue segment with some white mixed in: "sky blue white" matches both colours by chance.
    encoder = toy.ToyTextEncoder(shades=True)
    database = _Database(["a sky blue white kite", "the sky blue white kite", "a sky blue kite"], encoder)
    segment = _axes(encoder, {"sky blue": 0.9, "white": 0.44})
    embed = CandidateEmbeddings(encoder)
    assert name_segments(segment, database, embed, naming(names="phrases"))[0].label == "sky blue white"
    penalised = name_segments(segment, database, embed, naming(names="phrases", length_penalty=0.1))[0]
    assert penalised.label == "sky blue"
    scores = {c.name: c.score for c in penalised.candidates}
    norm = np.hypot(0.9, 0.44)
    assert scores["sky blue white"] == pytest.approx(1.34 / np.sqrt(2) / norm - 0.2, abs=1e-5)
    assert scores["sky blue"] == pytest.approx(0.9 / norm - 0.1, abs=1e-5)
    assert scores["white"] == pytest.approx(0.44 / norm, abs=1e-5)  # single words are never penalised


def test_cased_blend_changes_the_choice():
    # The segment looks a little more red than orange; the retrieved texts are mostly about orange.
    encoder = toy.ToyTextEncoder()
    texts = ["orange kite", "an orange door", "orange balloon", "a red kite"]
    database = _Database(texts, encoder)
    segment = _axes(encoder, {"red": 0.75, "orange": 0.66})
    embed = CandidateEmbeddings(encoder)
    tag_choice = name_segments(segment, database, embed, naming(min_count=1))[0]
    blended = name_segments(segment, database, embed, naming(min_count=1, cased_alpha=0.5))[0]
    assert tag_choice.label == "red" and blended.label == "orange"
    assert sum(c.score for c in blended.candidates) == pytest.approx(1.0)  # a mix of two distributions
    # alpha = 0 is TAG: scores stay cosines, not probabilities.
    assert name_segments(segment, database, embed, naming(min_count=1, cased_alpha=0.0))[0] == tag_choice


def test_blend_encodes_texts_when_the_database_stores_no_vectors():
    encoder = toy.ToyTextEncoder()
    database = _Database(["orange kite", "an orange door", "a red kite"], encoder)
    segment = _axes(encoder, {"red": 0.75, "orange": 0.66})
    with_vectors = name_segments(segment, database, CandidateEmbeddings(encoder), naming(min_count=1, cased_alpha=0.5))
    database.hits = [Hit(h.text, h.similarity, h.id) for h in database.hits]
    without = name_segments(segment, database, CandidateEmbeddings(encoder), naming(min_count=1, cased_alpha=0.5))
    assert [(c.name, round(c.score, 5)) for c in with_vectors[0].candidates] == [
        (c.name, round(c.score, 5)) for c in without[0].candidates
    ]


def test_invalid_naming_settings_are_refused():
    with pytest.raises(ConfigError, match="names='sentences'"):
        NamingSettings(names="sentences")
    with pytest.raises(ConfigError, match="cased_alpha=1.5"):
        NamingSettings(cased_alpha=1.5)
    with pytest.raises(ConfigError, match="min_count=0"):
        NamingSettings(min_count=0)
    for bad in ({"names": "single"}, {"length_penalty": -0.1}, {"cased_alpha": -0.1}):
        with pytest.raises(ConfigError):
            preset("toy", **bad)


# --- the toy world with two-word shades ---------------------------------------------------------


def _shade_tag(**overrides) -> TAG:
    encoder = toy.ToyTextEncoder(shades=True)
    config = preset("toy", **overrides)
    return TAG(toy.ToyPatchFeatures(shades=True), toy.ToyDenseEmbedder(shades=True), encoder, toy.toy_database(encoder), config)


SHADE_SCENES = [["grey", "sky blue", "navy blue", "brown"], ["sky blue", "navy blue", "yellow", "red"]]


@pytest.fixture(scope="module")
def shade_results() -> dict[str, list]:
    scenes = [toy.toy_scene(seed, names=names) for seed, names in enumerate(SHADE_SCENES)]
    results = {mode: [_shade_tag(names=mode)(image) for image, _, _ in scenes] for mode in ("words", "phrases")}
    results["scenes"] = scenes
    return results


def test_phrases_mode_names_two_word_shades(shade_results):
    for result, (_, regions, names) in zip(shade_results["phrases"], shade_results["scenes"]):
        ious = named_iou(result, regions, names)
        assert min(ious) > 0.8, dict(zip(names, ious))
        assert set(names) == set(result.labels)


def test_words_mode_cannot_name_two_word_shades(shade_results):
    for result in shade_results["words"]:
        assert not set(toy.SHADES) & set(result.labels)
        assert all(" " not in label for label in result.labels)


def test_default_toy_world_is_unchanged_by_shades():
    assert toy.ToyTextEncoder().dim == len(toy.PALETTE) + 64
    assert toy.toy_captions() == [c for c in toy.toy_captions(shades=True) if "sky" not in c and "navy" not in c]
    # The shade is a bigram: "sky" alone and "blue" alone are not on its axis.
    encoder = toy.ToyTextEncoder(shades=True)
    shade, sky, blue = encoder.encode(["sky blue", "sky", "blue"])
    assert float(shade @ sky) == pytest.approx(0.0) and float(shade @ blue) == pytest.approx(0.0)


def test_from_pretrained_takes_the_names_switch():
    tag = TAG.from_pretrained("toy", names="phrases", cased_alpha=0.25)
    assert (tag.config.names, tag.config.cased_alpha) == ("phrases", 0.25)
    image, regions, names = toy.toy_scene(3)
    assert set(names) <= set(tag(image).labels)  # single colour words still win in phrases mode


def test_candidate_embedding_cache_encodes_each_name_once_and_survives_eviction() -> None:
    from tagseg.naming import CandidateEmbeddings
    from tagseg.toy import ToyTextEncoder

    class CountingEncoder(ToyTextEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.encoded: list[str] = []

        def encode(self, texts):  # type: ignore[no-untyped-def]
            self.encoded += list(texts)
            return super().encode(texts)

    encoder = CountingEncoder()
    cache = CandidateEmbeddings(encoder, capacity=2)
    first = cache(["red", "blue", "car"])
    again = cache(["red", "red"])
    assert encoder.encoded == ["red", "blue", "car", "red"]  # capacity 2 evicted "red" once
    assert torch.equal(first[0], again[1])
    assert cache([]).shape == (0, encoder.dim)


def test_candidate_embedding_cache_survives_eviction_by_another_thread() -> None:
    import threading

    from tagseg.naming import CandidateEmbeddings
    from tagseg.toy import ToyTextEncoder

    started, release = threading.Event(), threading.Event()

    class PausingEncoder(ToyTextEncoder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            if "green" in texts:  # the first caller pauses while encoding
                started.set()
                release.wait(5)
            return super().encode(texts)

    cache = CandidateEmbeddings(PausingEncoder(), capacity=3)
    cache(["red", "blue"])
    results: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: results.append(cache(["red", "green"])))
    worker.start()
    started.wait(5)
    cache(["cat", "dog", "sky"])  # evicts "red" while the worker encodes "green"
    release.set()
    worker.join(5)
    assert len(results) == 1 and results[0].shape == (2, cache.encoder.dim)
