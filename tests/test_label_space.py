"""One mapping of free-form names onto a fixed label set, and the alias and word-list files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tagseg.errors import ConfigError
from tagseg.label_space import LabelMatch, LabelSpace, read_aliases

VECTORS = {
    "cat": [1.0, 0.0, 0.0],
    "dog": [0.0, 1.0, 0.0],
    "Car": [0.0, 0.0, 1.0],
    "kitten": [0.9, 0.1, 0.0],
    "truck": [0.0, 0.3, 0.8],
    "cloud": [0.5, 0.5, 0.5],
}


def encode(texts: list[str]) -> np.ndarray:
    vectors = np.array([VECTORS[t] for t in texts], dtype=float)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_same_text_then_nearest_embedding_and_nothing_below_the_minimum() -> None:
    encoded: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        encoded.append(list(texts))
        return encode(texts)

    space = LabelSpace(["cat", "dog", "Car"], counting, min_similarity=0.8)
    matches = space.map(["CAT", "kitten", "truck", "cloud", "kitten"])
    assert [m.label for m in matches] == ["cat", "cat", "Car", None, "cat"]
    assert matches[0] == LabelMatch("cat", 1.0) and matches[3].similarity == pytest.approx(1 / 3**0.5)
    assert encoded == [["cloud", "kitten", "truck"], ["cat", "dog", "Car"]]  # each open name once, labels once
    assert space.map(["cloud"])[0].label is None and len(encoded) == 3


def test_aliases_come_first_and_without_a_minimum_every_name_gets_a_label() -> None:
    space = LabelSpace(["cat", "dog", "Car"], lambda texts: torch.tensor(encode(texts), dtype=torch.bfloat16), aliases={"Cloud": "dog"})
    assert [m.label for m in space.map(["cloud", "truck"])] == ["dog", "Car"]


def test_an_empty_label_set_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one label"):
        LabelSpace([], encode)


def test_alias_files_have_one_format_and_the_old_json_tables_still_read(tmp_path: Path) -> None:
    lines = tmp_path / "aliases.txt"
    lines.write_text("automobile, car -> Car  # vehicles\n\ngrass -> Vegetation\n", encoding="utf-8")
    assert read_aliases(lines) == {"automobile": "Car", "car": "Car", "grass": "Vegetation"}
    old = tmp_path / "aliases.json"
    old.write_text('{"automobile": "Car"}', encoding="utf-8")
    with pytest.warns(FutureWarning, match="lines 'kitten, kitty -> cat'"):
        assert read_aliases(old) == {"automobile": "Car"}
    old.write_text('{"automobile": 3}', encoding="utf-8")
    with pytest.raises(ConfigError, match="JSON object of name -> label"):
        read_aliases(old)
