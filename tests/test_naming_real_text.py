"""Stage 3 with real language: retrieval, candidate rules and naming driven by a real text model.

No real CLIP is available offline, so the real all-MiniLM-L6-v2 stands in for both towers: a
"segment embedding" is the embedding of a description of the segment. This checks that the naming
stage picks sensible names from real captions and from the shipped vocabulary, which the toy world
(colour words) cannot show.
"""

from __future__ import annotations

import pytest
from database_support import SentenceTransformerEncoder

from tagseg.database import InMemoryTextDatabase, default_vocabulary
from tagseg.config import NamingSettings
from tagseg.naming import CandidateEmbeddings, name_segments

CAPTIONS = [
    "a dog catching a frisbee in the park",
    "my dog running on the grass with a frisbee",
    "a brown dog lying on the lawn",
    "two dogs playing in a park on a sunny day",
    "a tabby cat sleeping on a sofa",
    "the cat curled up on the couch",
    "a kitten on a sofa cushion",
    "a cat looking out of the living room window",
    "a red double decker bus on a city street",
    "a bus stopping at a bus stop downtown",
    "a yellow school bus parked by the road",
    "a sailing boat on the lake at sunset",
    "boats moored in a small harbour",
    "a fishing boat on the calm sea",
    "a plate of spaghetti with tomato sauce",
    "a bowl of pasta on the kitchen table",
    "fresh pasta with basil and parmesan",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder()


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("a puppy on the lawn", {"dog"}),
        ("a kitty resting on the couch", {"cat", "sofa", "couch"}),
        ("public transport vehicle in town", {"bus"}),
        ("a yacht on the water", {"boat"}),
        ("a noodle dish", {"pasta", "spaghetti"}),
    ],
)
def test_captions_name_a_segment_with_a_word_they_share(encoder, description: str, expected: set[str]) -> None:
    database = InMemoryTextDatabase.from_texts(CAPTIONS, encoder)
    segment = encoder.encode([description])
    [naming] = name_segments(segment, database, CandidateEmbeddings(encoder), NamingSettings(top_k=10))
    assert naming.label in expected, naming
    assert naming.score == pytest.approx(float(encoder.encode([naming.label])[0] @ segment[0]), abs=1e-5)
    retrieved_words = {word.strip(".,").lower() for r in naming.retrieved for word in r.text.split()}
    assert naming.label in retrieved_words or naming.label + "s" in retrieved_words


def test_the_shipped_vocabulary_names_segments_in_phrases_mode(encoder) -> None:
    names = default_vocabulary()
    wanted = ["golden retriever", "hydrant", "sailboat", "tabby", "pizza", "traffic light"]
    subset = [n for n in names if n in wanted] + names[:: len(names) // 2000]
    database = InMemoryTextDatabase.from_texts(subset, encoder)
    descriptions = ["a golden retriever dog", "a red fire hydrant on the sidewalk", "a traffic light at a crossing"]
    namings = name_segments(
        encoder.encode(descriptions), database, CandidateEmbeddings(encoder), NamingSettings(top_k=10, names="phrases")
    )
    assert [n.label for n in namings] == ["golden retriever", "hydrant", "traffic light"]
    words = name_segments(encoder.encode(descriptions), database, CandidateEmbeddings(encoder), NamingSettings(top_k=10))
    assert all(" " not in n.label for n in words), "words mode never gives a phrase"
    assert words[0].label in {"retriever", "golden", "dog"}


def test_a_segment_never_takes_another_segments_word(encoder) -> None:
    database = InMemoryTextDatabase.from_texts(CAPTIONS, encoder)
    segments = encoder.encode(["a puppy on the lawn", "a yacht on the water"])
    namings = name_segments(segments, database, CandidateEmbeddings(encoder), NamingSettings(top_k=3))
    for naming in namings:
        own_text = " ".join(r.text.lower() for r in naming.retrieved)
        assert all(candidate.name in own_text for candidate in naming.candidates), naming
    assert [n.label for n in namings] == ["dog", "boat"]
