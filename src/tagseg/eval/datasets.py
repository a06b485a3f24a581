"""Benchmark readers for the standard on-disk layouts, plus the toy world as a dataset.

Every reader yields ``(image id, RGB uint8 image, label map)`` where the label map holds class
indices into ``class_names`` and ``IGNORE_INDEX`` (255) for pixels that are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from tagseg.errors import TagsegError
from tagseg.eval import classes

IGNORE_INDEX = 255


class DatasetLayoutError(TagsegError, FileNotFoundError):
    """A dataset folder is not in the layout its reader expects; the message says what is missing."""


class SegmentationDataset:
    """Images with class label maps. Subclasses implement :meth:`ids` and :meth:`load`."""

    name: str
    class_names: tuple[str, ...]
    background: int | None = None  # index of a "background" class that may be ignored or scored
    note: str | None = None  # what the reader chose on its own (e.g. every image, for want of a split list)

    def ids(self) -> list[str]:
        """Image ids, in evaluation order; unique within the dataset."""
        raise NotImplementedError

    def image(self, index: int) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)`` image number ``index``."""
        raise NotImplementedError

    def label(self, index: int) -> np.ndarray:
        """``(H, W)`` uint8 class-index map of image number ``index`` (255: not scored)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids())


@dataclass(frozen=True)
class _Item:
    id: str
    image: Path
    label: Path


class FileDataset(SegmentationDataset):
    """Image and label files; raw label values become class indices through a 256-entry table."""

    def __init__(
        self,
        name: str,
        class_names: Sequence[str],
        items: Sequence[_Item],
        table: np.ndarray,
        background: int | None = None,
        note: str | None = None,
    ) -> None:
        self.name = name
        self.class_names = tuple(class_names)
        self.items = list(items)
        self.table = table
        self.background = background
        self.note = note

    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def image(self, index: int) -> np.ndarray:
        from tagseg.image import load_image

        return load_image(self.items[index].image)

    def label(self, index: int) -> np.ndarray:
        return read_label_png(self.items[index].label, self.table)


def read_label_png(path: Path, table: np.ndarray) -> np.ndarray:
    """Raw values of a single-channel (palette or greyscale) label PNG, mapped through ``table``."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise DatasetLayoutError(
                f"Label file {path} has mode {image.mode}; expected a single-channel label PNG "
                "(palette or greyscale with class ids as pixel values), not a colour rendering."
            )
        raw = np.asarray(image)
    if raw.size and int(raw.max()) >= len(table):
        raise DatasetLayoutError(f"Label file {path} holds value {int(raw.max())}, beyond the dataset's label ids.")
    return table[raw]


def _find_root(root: Path, marker: str, nested: Sequence[str], what: str) -> Path:
    """``root`` itself or one of its ``nested`` sub-folders, whichever contains ``marker``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"{what}: dataset folder {root} does not exist.")
    for candidate in [root, *(root / sub for sub in nested)]:
        if (candidate / marker).exists():
            return candidate
    tried = ", ".join(str(root / sub / marker) for sub in ["", *nested])
    raise DatasetLayoutError(f"{what}: {marker} not found under {root} (looked for {tried}).")


def _require(path: Path, what: str, role: str) -> Path:
    if not path.exists():
        raise DatasetLayoutError(f"{what}: missing {role} at {path}.")
    return path


def _from_list(base: Path, list_file: Path, image_dir: str, label_dir: str, label_suffix: str, what: str) -> list[_Item]:
    """Items named one per line in ``list_file``; every file must exist."""
    _require(list_file, what, "image list")
    items = []
    for line in list_file.read_text(encoding="utf-8").split():
        image = _require(base / image_dir / f"{line}.jpg", what, f"image of {line!r}")
        label = _require(base / label_dir / f"{line}{label_suffix}", what, f"label of {line!r}")
        items.append(_Item(line, image, label))
    if not items:
        raise DatasetLayoutError(f"{what}: image list {list_file} is empty.")
    return items


def _paired(image_dir: Path, label_dir: Path, image_suffix: str, label_suffix: str, what: str) -> list[_Item]:
    """Every ``*image_suffix`` below ``image_dir`` (recursively) with its label at the same relative path."""
    _require(image_dir, what, "image folder")
    _require(label_dir, what, "label folder")
    items = []
    for image in sorted(image_dir.rglob(f"*{image_suffix}")):
        stem = image.relative_to(image_dir).as_posix()[: -len(image_suffix)]
        label = _require(label_dir / f"{stem}{label_suffix}", what, f"label of {stem!r}")
        items.append(_Item(stem, image, label))
    if not items:
        raise DatasetLayoutError(f"{what}: no *{image_suffix} images in {image_dir}.")
    return items


def voc(root: str | Path, split: str = "val") -> FileDataset:
    """PASCAL VOC 2012: ``VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/<split>.txt}``.

    ``root`` is the VOC2012 folder, VOCdevkit, or the folder holding VOCdevkit. 21 classes with
    background at index 0 (ignored or scored by the evaluation's ``count_background``). A folder with
    no split lists at all (labelme's VOC export) is evaluated whole: every label with its image,
    which the dataset's ``note`` says.
    """
    what = "PASCAL VOC 2012"
    base = _find_root(Path(root), "SegmentationClass", ["VOC2012", "VOCdevkit/VOC2012"], what)
    lists = base / "ImageSets" / "Segmentation"
    table = classes.lookup_table(range(21))
    if not any(lists.glob("*.txt")):
        items = [
            _Item(label.stem, _require(base / "JPEGImages" / f"{label.stem}.jpg", what, f"image of {label.stem!r}"), label)
            for label in sorted((base / "SegmentationClass").glob("*.png"))
        ]
        if not items:
            raise DatasetLayoutError(f"{what}: no label PNGs in {base / 'SegmentationClass'}.")
        note = f"no split lists in {lists}: evaluating all {len(items)} labelled images, not the {split!r} split."
        return FileDataset("voc", classes.VOC, items, table, background=0, note=note)
    items = _from_list(base, lists / f"{split}.txt", "JPEGImages", "SegmentationClass", ".png", what)
    return FileDataset("voc", classes.VOC, items, table, background=0)


def context59(root: str | Path, split: str = "val") -> FileDataset:
    """PASCAL Context-59 in mmsegmentation's layout (VOC2010 images, 0 = unlabelled, 1..59 = classes).

    ``VOC2010/{JPEGImages, SegmentationClassContext, ImageSets/SegmentationContext/<split>.txt}``.
    """
    what = "PASCAL Context-59"
    base = _find_root(Path(root), "SegmentationClassContext", ["VOC2010", "VOCdevkit/VOC2010"], what)
    items = _from_list(
        base,
        base / "ImageSets" / "SegmentationContext" / f"{split}.txt",
        "JPEGImages",
        "SegmentationClassContext",
        ".png",
        what,
    )
    return FileDataset("context59", classes.CONTEXT59, items, classes.lookup_table(range(1, 60)))


def ade20k(root: str | Path, split: str = "validation") -> FileDataset:
    """ADE20K-150 (SceneParsing): ``ADEChallengeData2016/{images,annotations}/<split>``; 0 = other, ignored."""
    what = "ADE20K-150"
    base = _find_root(Path(root), "annotations", ["ADEChallengeData2016"], what)
    items = _paired(base / "images" / split, base / "annotations" / split, ".jpg", ".png", what)
    return FileDataset("ade20k", classes.ADE150, items, classes.lookup_table(range(1, 151)))


def coco_stuff(root: str | Path, split: str = "val2017") -> FileDataset:
    """COCO-Stuff-171: ``{images,annotations}/<split>`` as mmsegmentation lays out ``coco_stuff164k``.

    Labels are either ``*_labelTrainIds.png`` (0..170, mmsegmentation's converted files) or the
    original stuffthingmaps ``*.png`` (COCO id - 1, mapped to the 171 classes here).
    """
    what = "COCO-Stuff-171"
    base = _find_root(Path(root), "annotations", ["coco_stuff164k"], what)
    labels = base / "annotations" / split
    if labels.is_dir() and next(labels.glob("*_labelTrainIds.png"), None) is not None:
        items = _paired(base / "images" / split, labels, ".jpg", "_labelTrainIds.png", what)
        table = classes.lookup_table(range(171))
    else:
        items = _paired(base / "images" / split, labels, ".jpg", ".png", what)
        table = classes.lookup_table(classes.COCO_STUFF_RAW_IDS)
    return FileDataset("cocostuff", classes.COCO_STUFF171, items, table)


def cityscapes(root: str | Path, split: str = "val") -> FileDataset:
    """Cityscapes-19: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine`` labels.

    Uses ``*_gtFine_labelTrainIds.png`` when present, else ``*_gtFine_labelIds.png`` through the
    official id -> trainId mapping.
    """
    what = "Cityscapes-19"
    base = _find_root(Path(root), "gtFine", ["cityscapes"], what)
    labels = base / "gtFine" / split
    if labels.is_dir() and next(labels.rglob("*_gtFine_labelTrainIds.png"), None) is not None:
        suffix, table = "_gtFine_labelTrainIds.png", classes.lookup_table(range(19))
    else:
        suffix, table = "_gtFine_labelIds.png", classes.lookup_table(classes.CITYSCAPES_LABEL_IDS)
    items = _paired(base / "leftImg8bit" / split, labels, "_leftImg8bit.png", suffix, what)
    return FileDataset("cityscapes", classes.CITYSCAPES19, items, table)


class ToyDataset(SegmentationDataset):
    """``count`` toy scenes (:func:`tagseg.toy.toy_scene`); classes are the palette's colour names."""

    name = "toy"

    def __init__(self, count: int = 20, *, seed: int = 0, size: tuple[int, int] = (240, 320), num_shapes: int = 3):
        from tagseg.toy import PALETTE

        self.count = count
        self.seed = seed
        self.size = size
        self.num_shapes = num_shapes
        self.class_names = tuple(PALETTE)

    def ids(self) -> list[str]:
        height, width = self.size
        return [f"toy-{self.seed + i}-{height}x{width}-{self.num_shapes}" for i in range(self.count)]

    def image(self, index: int) -> np.ndarray:
        from tagseg.toy import toy_scene

        return toy_scene(self.seed + index, self.size, self.num_shapes)[0]

    def label(self, index: int) -> np.ndarray:
        from tagseg.toy import toy_scene

        _, regions, names = toy_scene(self.seed + index, self.size, self.num_shapes)
        region_class = np.array([self.class_names.index(name) for name in names], dtype=np.uint8)
        return region_class[regions]


READERS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": voc,
    "context59": context59,
    "ade20k": ade20k,
    "cocostuff": coco_stuff,
    "cityscapes": cityscapes,
}


def open_dataset(kind: str, root: str | Path | None = None, split: str | None = None) -> SegmentationDataset:
    """A dataset by kind (``voc``, ``context59``, ``ade20k``, ``cocostuff``, ``cityscapes``) and folder.

    ``toy`` needs no folder: it is the default :class:`ToyDataset`.
    """
    if kind == "toy":
        return ToyDataset()
    if kind not in READERS:
        raise DatasetLayoutError(f"Unknown dataset {kind!r}; choose one of: {', '.join([*READERS, 'toy'])}.")
    if root is None:
        raise DatasetLayoutError(f"Dataset {kind!r} needs the folder it is stored in (root).")
    return READERS[kind](root) if split is None else READERS[kind](root, split)
