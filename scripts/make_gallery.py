"""Write the README's gallery: the toy preset's overlays of the example photos, to docs/images/.

    python scripts/make_gallery.py

Runs offline in seconds (the toy preset needs no weights). Each picture is what
`tagseg segment examples/NAME.jpg --preset toy` writes as NAME.overlay.png.
"""

from __future__ import annotations

from pathlib import Path

from tagseg import TAG
from tagseg.image import load_image
from tagseg.render import overlay

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    tag = TAG.from_pretrained("toy")
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    for photo in sorted((ROOT / "examples").glob("*.jpg")):
        result = tag(photo)
        target = out / f"{photo.stem}.toy.overlay.png"
        overlay(load_image(photo), result).save(target, optimize=True)
        names = ", ".join(segment.label for segment in result.segments)
        print(f"{target.relative_to(ROOT)}: {names}")


if __name__ == "__main__":
    main()
