"""Regenerate ``src/tagseg/data/vocabulary/imagenet21k_lemmas.txt.gz`` from a ``timm`` wheel.

The ImageNet-21k classes are WordNet 3.0 noun synsets; ``timm`` ships their ids and lemmas. Every
lemma of every class is kept once (case kept), except those with fewer than two letters.

    pip download --no-deps timm==1.0.31 -d /tmp/timm
    python scripts/make_default_vocabulary.py /tmp/timm/timm-1.0.31-py3-none-any.whl
"""

from __future__ import annotations

import gzip
import sys
import zipfile
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src/tagseg/data/vocabulary/imagenet21k_lemmas.txt.gz"
SYNSETS = "timm/data/_info/imagenet21k_goog_synsets.txt"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"


def imagenet21k_lemmas(wheel: Path) -> list[str]:
    """Every lemma of the ImageNet-21k classes, de-duplicated and sorted case-insensitively."""
    with zipfile.ZipFile(wheel) as archive:
        synsets = archive.read(SYNSETS).decode("utf-8").split()
        lemmas_of = dict(line.split("\t", 1) for line in archive.read(LEMMAS).decode("utf-8").splitlines())
    lemmas = {
        lemma.strip()
        for synset in synsets
        for lemma in lemmas_of[synset].split(",")
        if sum(c.isalpha() for c in lemma) >= 2
    }
    return sorted(lemmas, key=lambda lemma: (lemma.casefold(), lemma))


def main() -> None:
    lemmas = imagenet21k_lemmas(Path(sys.argv[1]))
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(TARGET, "wb", mtime=0) as handle:
        handle.write(("\n".join(lemmas) + "\n").encode("utf-8"))
    print(f"{len(lemmas)} lemmas written to {TARGET}")


if __name__ == "__main__":
    main()
