"""Pascal-VOC ``SegmentationClass``: one class-id PNG per image, ``class_names.txt`` and the image set list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tagseg.exports.categories import CategoryTable
from tagseg.exports.writer import write_png, write_text
from tagseg.render import palette
from tagseg.result import Segmentation

__all__ = ["VocWriter", "class_map_image"]


def class_map_image(class_map: np.ndarray) -> Image.Image:
    """A lossless PNG-ready image of integer ids: palette (mode ``P``, 0 black) below 255, else 16-bit."""
    if int(class_map.max(initial=0)) < 255:
        image = Image.fromarray(class_map.astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, *palette(254).ravel().tolist()])
        return image
    if int(class_map.max()) > 65535:
        raise ValueError("more than 65535 ids do not fit a 16-bit PNG")
    return Image.fromarray(class_map.astype(np.uint16))


class VocWriter:
    """Every pixel gets its segment's category id (0: unlabelled or a name a frozen table lacks)."""

    def __init__(self, out_dir: str | Path, categories: CategoryTable) -> None:
        self.folder = Path(out_dir) / "voc"
        self.categories = categories
        self._names: list[str] = []

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        classes = [self.categories.id(segment.label) or 0 for segment in result.segments]
        lookup = np.array(classes or [0], dtype=np.int64)
        self._names.append(name)
        return [write_png(class_map_image(lookup[result.label_map]), self.folder / "SegmentationClass" / f"{name}.png")]

    def finish(self) -> list[Path]:
        names = self.categories.names_by_id()
        lines = ["_unlabeled_", *(names.get(i, f"_unused_{i}") for i in range(1, self.categories.max_id + 1))]
        return [
            write_text(self.folder / "class_names.txt", "\n".join(lines) + "\n"),
            write_text(self.folder / "ImageSets" / "Segmentation" / "all.txt", "".join(f"{n}\n" for n in self._names)),
        ]
