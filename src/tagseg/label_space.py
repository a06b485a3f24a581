"""Free-form names onto a fixed set of labels, and the files that give labels and aliases.

One mapping serves the naming vocabulary (:mod:`tagseg.controls`), the labels of a Label Studio
project (:mod:`tagseg.serve.labelstudio`) and the classes of an evaluation dataset
(:mod:`tagseg.eval.protocols`): a name goes through the alias table, then to the label equal to it
(ignoring case), else to the label whose text embedding has the highest cosine with its own. Below
``min_similarity`` (a cosine between two text embeddings) the name maps to no label.

Alias files have one format, lines ``kitten, kitty -> cat`` (:func:`read_aliases`); a JSON object
of name -> label, which ``tagseg serve --label-aliases`` took before, is still read.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tagseg.errors import ConfigError

__all__ = ["Encode", "LabelMatch", "LabelSpace", "read_aliases", "read_words"]

Encode = Callable[[list[str]], Any]
"""Texts -> ``(N, D)`` L2-normalised embeddings (a numpy array or a CPU torch tensor)."""


@dataclass(frozen=True)
class LabelMatch:
    """The label a name maps to (``None``: none is similar enough) and the cosine it was chosen with
    (1.0 for an alias or a label of the same text)."""

    label: str | None
    similarity: float


class LabelSpace:
    """A fixed set of labels that free-form names are mapped onto (aliases, same text, nearest embedding).

    ``encode`` embeds texts (label and name alike, so any prompt template belongs in it); the
    labels are embedded on first use. ``min_similarity=None`` maps every name to its nearest label.
    """

    def __init__(
        self,
        labels: Sequence[str],
        encode: Encode,
        *,
        aliases: Mapping[str, str] | None = None,
        min_similarity: float | None = None,
    ) -> None:
        self.labels = list(dict.fromkeys(labels))
        if not self.labels:
            raise ConfigError("A label space needs at least one label.")
        self.encode = encode
        self.min_similarity = min_similarity
        self._same_text = {label.casefold(): label for label in reversed(self.labels)}  # the first of equal ones
        self._aliases = {name.casefold(): target for name, target in (aliases or {}).items()}
        self._label_vectors: np.ndarray | None = None

    def map(self, names: Sequence[str]) -> list[LabelMatch]:
        """The label of each name, embedding those that match no label or alias in one batch."""
        resolved = [self._aliases.get(name.casefold(), name) for name in names]
        matches: list[LabelMatch | None] = [
            LabelMatch(self._same_text[name.casefold()], 1.0) if name.casefold() in self._same_text else None
            for name in resolved
        ]
        open_names = sorted({name for name, match in zip(resolved, matches) if match is None})
        if open_names:
            similarity = _vectors(self.encode(open_names)) @ self.label_vectors().T
            best = similarity.argmax(axis=1)
            nearest = {name: (int(i), float(row[i])) for name, i, row in zip(open_names, best, similarity)}
            for position, name in enumerate(resolved):
                if matches[position] is None:
                    index, cosine = nearest[name]
                    close = self.min_similarity is None or cosine >= self.min_similarity
                    matches[position] = LabelMatch(self.labels[index] if close else None, cosine)
        return [match for match in matches if match is not None]

    def label_vectors(self) -> np.ndarray:
        """The labels' embeddings, ``(labels, D)``; computed once (call it early to load the text model)."""
        if self._label_vectors is None:
            self._label_vectors = _vectors(self.encode(self.labels))
        return self._label_vectors


def _vectors(embeddings: Any) -> np.ndarray:
    """Embeddings as a float64 numpy array, from numpy or a (possibly bfloat16) CPU torch tensor."""
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float64)


def read_words(source: str | Path | Sequence[str]) -> list[str]:
    """A word list: a file (one name a line, ``#`` comments), a comma-separated string, or a sequence."""
    if isinstance(source, (list, tuple)):
        return [str(w).strip() for w in source if str(w).strip()]
    path = Path(source)
    if path.is_file():
        lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line]
    _refuse_missing_file(str(source), separator=",")
    return [part.strip() for part in str(source).split(",") if part.strip()]


_LIST_FILE_SUFFIXES = frozenset({".txt", ".csv", ".tsv", ".lst", ".list", ".names", ".json"})


def _refuse_missing_file(text: str, separator: str) -> None:
    """A value that names a file which is not there must not be read as a list of names."""
    looks_like_path = "/" in text or "\\" in text or Path(text).suffix.lower() in _LIST_FILE_SUFFIXES
    if separator not in text and looks_like_path:
        raise ConfigError(f"{text}: no such file (give a file, or the names themselves separated by '{separator}').")


def read_aliases(source: str | Path) -> dict[str, str]:
    """Aliases from a file or a ``;``-separated string of lines ``kitten, kitty -> cat`` (many names -> one).

    A file holding a JSON object of name -> label (the older format of ``tagseg serve``'s alias
    table) is read too, with a warning to rewrite it as lines.
    """
    path = Path(source)
    if not path.is_file():
        _refuse_missing_file(str(source), separator="->")
    text = path.read_text(encoding="utf-8") if path.is_file() else str(source).replace(";", "\n")
    if path.is_file() and text.lstrip().startswith("{"):
        return _json_aliases(path, text)
    aliases: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        names, arrow, target = line.partition("->")
        if not arrow or not target.strip():
            raise ConfigError(f"Alias line {number} {line!r} is not of the form 'kitten, kitty -> cat'.")
        for name in names.split(","):
            if name.strip():
                aliases[name.strip()] = target.strip()
    return aliases


def _json_aliases(path: Path, text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"Cannot read the alias table {path}: {error}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"The alias table {path} must be a JSON object of name -> label strings.")
    warnings.warn(
        f"{path} is a JSON alias table; it is still read, but write it as lines 'kitten, kitty -> cat' "
        "(the format every alias option takes).",
        FutureWarning,
        stacklevel=2,
    )
    return data
