"""Naming controls with the toy world: vocabulary (closest / direct), aliases, blocklist, abstain, prefer objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagseg import TAG
from tagseg.config import preset
from tagseg.controls import apply_controls, controls_active
from tagseg.label_space import read_aliases, read_words
from tagseg.database.memory import InMemoryTextDatabase
from tagseg.errors import ConfigError
from tagseg.naming import CandidateEmbeddings, Naming
from tagseg.result import Candidate
from tagseg.toy import PALETTE, ToyTextEncoder, toy_captions, toy_scene

SCENE = toy_scene(1, size=(120, 160), num_shapes=3)


def run(**settings):
    return TAG.from_pretrained("toy", image_size=128, **settings)(SCENE[0])


@pytest.fixture(scope="module")
def plain():
    return run()


def areas(result) -> dict[str, int]:
    return {s.label: s.area for s in result.segments}


def test_off_by_default_changes_nothing(plain) -> None:
    assert not controls_active(preset("toy").controls)
    assert set(SCENE[2]) <= set(plain.labels)
    namings = [Naming("red", 0.9, [Candidate("red", 0.9, 3)], [])]
    assert apply_controls(namings, torch.ones(1, 3), None, preset("toy").controls) is namings  # type: ignore[arg-type]


def test_vocabulary_closest_word_by_text_embedding(plain) -> None:
    vocabulary = [f"{colour} thing" for colour in PALETTE]
    result = run(vocabulary=vocabulary)
    assert areas(result) == {f"{label} thing": area for label, area in areas(plain).items()}
    assert all(c.name in vocabulary for s in result.segments for c in s.candidates)


def test_vocabulary_direct_needs_no_retrieval() -> None:
    missing = SCENE[2][1]
    captions = [c for c in toy_captions() if missing not in c.split()]
    database = InMemoryTextDatabase.from_texts(captions, ToyTextEncoder())
    tag = TAG.from_pretrained("toy", image_size=128, database=database)
    assert missing not in tag(SCENE[0]).labels
    direct = TAG.from_pretrained("toy", image_size=128, database=database, vocabulary=list(PALETTE), vocabulary_mode="direct")
    assert set(SCENE[2]) <= set(direct(SCENE[0]).labels)


def test_aliases_merge_names_and_blocklist_removes_one(plain) -> None:
    first, second = SCENE[2][1], SCENE[2][2]
    merged = run(aliases={first: second, "kitten": "cat"})  # many names to one
    assert first not in merged.labels
    assert areas(merged)[second] == areas(plain)[first] + areas(plain)[second]
    blocked = run(blocklist=[first])
    assert first not in blocked.labels and all(first not in [c.name for c in s.candidates] for s in blocked.segments)


def test_abstain_threshold_names_weak_segments_unknown(plain) -> None:
    assert run(abstain_threshold=0.0).labels == plain.labels
    result = run(abstain_threshold=0.999, unknown_label="?")
    assert result.labels == ["?"] and result.segments[0].area == SCENE[0].shape[0] * SCENE[0].shape[1]
    assert result.segments[0].candidates, "the candidates stay as evidence"


class _Words:
    """A text encoder with fixed word vectors."""

    dim = 3
    model_id = "test/words"
    vectors = {"room": [1.0, 0.0, 0.0], "chair": [0.96, 0.28, 0.0], "living room": [1.0, 0.05, 0.0], "dog": [0.0, 0.0, 1.0]}

    def encode(self, texts):
        return torch.nn.functional.normalize(torch.tensor([self.vectors[t] for t in texts]), dim=-1)


@pytest.mark.parametrize("margin, expected", [(0.05, "chair"), (0.01, "room")])
def test_prefer_objects_demotes_scene_words(margin: float, expected: str) -> None:
    names = ["room", "living room", "chair", "dog"]
    query = torch.tensor([1.0, 0.0, 0.0])
    scores = (CandidateEmbeddings(_Words())(names) @ query).tolist()
    naming = Naming("room", 1.0, sorted([Candidate(n, s, 2) for n, s in zip(names, scores)], key=lambda c: -c.score), [])
    config = preset("toy", prefer_objects=True, prefer_objects_margin=margin)
    [result] = apply_controls([naming], query[None], CandidateEmbeddings(_Words()), config.controls)
    assert result.label == expected
    assert result.candidates[0].name == expected and len(result.candidates) == 4


def test_word_lists_alias_files_and_validation(tmp_path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("cat\n# comment\n\nteddy bear  # toy\n")
    assert read_words(words) == ["cat", "teddy bear"]
    assert read_words("cat, dog") == ["cat", "dog"]
    assert read_aliases("kitten, kitty -> cat; puppy -> dog") == {"kitten": "cat", "kitty": "cat", "puppy": "dog"}
    with pytest.raises(ConfigError, match="kitten"):
        read_aliases("kitten cat")
    for bad in ({"vocabulary_mode": "nearest"}, {"vocabulary": "cat"}, {"unknown_label": ""}, {"aliases": {"a": ""}}):
        with pytest.raises(ConfigError):
            preset("toy", **bad)
    assert preset("toy", vocabulary=("a", "b")).vocabulary == ["a", "b"]
    assert np.isclose(preset("toy").abstain_threshold, -1.0)


def test_a_missing_word_list_file_is_an_error_not_a_name(tmp_path) -> None:
    from tagseg.errors import ConfigError

    with pytest.raises(ConfigError, match="my_colours.txt: no such file"):
        read_words("my_colours.txt")
    with pytest.raises(ConfigError, match="no such file"):
        read_words(str(tmp_path / "names"))
    with pytest.raises(ConfigError, match="no such file"):
        read_aliases("aliases.txt")
    assert read_words("cat, dog") == ["cat", "dog"] and read_words("cat") == ["cat"]
    assert read_aliases("kitten, kitty -> cat") == {"kitten": "cat", "kitty": "cat"}
