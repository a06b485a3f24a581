"""Dataset exports round-trip: written, read back with pycocotools / PIL, compared with the in-memory results."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from scipy.ndimage import binary_fill_holes
from typer.testing import CliRunner

from tagseg import TAG
from tagseg.cli import app
from tagseg.exports import WRITERS, CategoryTable, ExportOptions, ExportWriter, RunExporter, class_map_image, export_folder, read_result
from tagseg.masks import mask_bbox
from tagseg.result import Segmentation
from tagseg.toy import PALETTE, toy_scene


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_red_squares() -> np.ndarray:
    """Grey background, a red square top-left and another bottom-right (far apart), a blue bar."""
    image = np.empty((128, 160, 3), dtype=np.uint8)
    image[:] = PALETTE["grey"]
    image[10:50, 10:50] = PALETTE["red"]
    image[80:120, 110:150] = PALETTE["red"]
    image[90:120, 20:80] = PALETTE["blue"]
    return image


@pytest.fixture(scope="module")
def results() -> list[tuple[str, Segmentation]]:
    tag = TAG.from_pretrained("toy", image_size=128)
    named = [(f"scene{seed}", tag(toy_scene(seed, size=(120, 160))[0])) for seed in range(3)]
    return named + [("sub/squares", tag(two_red_squares()))]


@pytest.fixture(scope="module")
def exported(results, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CategoryTable]:
    out = tmp_path_factory.mktemp("export")
    everything = ExportOptions(min_instance_area=0)  # every instance, so the round trips are exact
    exporter = RunExporter(out, ["coco", "panoptic", "voc", "yolo", "embeddings"], options=everything)
    for name, result in results:
        exporter.add(name, result, f"images/{name}.png")
    exporter.finish()
    return out, exporter.categories


def test_same_name_far_apart_is_one_segment_with_two_instances(results) -> None:
    squares = dict(results)["sub/squares"]
    red = next(s for s in squares.segments if s.label == "red")
    instances = [i.mask for i in red.instances()]
    assert len(instances) == 2 and all(abs(int(m.sum()) - 1600) < 320 for m in instances)
    assert np.array_equal(np.logical_or(*instances), red.mask)


def test_coco_instances_read_back_with_pycocotools(results, exported) -> None:
    out, table = exported
    coco = COCO(str(out / "coco" / "instances.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert len(set(names.values())) == len(names), "one id per name across the run"
    for image_id, (name, result) in enumerate(results, start=1):
        assert coco.imgs[image_id]["file_name"] == f"{name}.png"  # relative to the images' common folder
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(annotations) == sum(len(s.instances()) for s in result.segments)
        for segment in result.segments:
            mine = [a for a in annotations if names[a["category_id"]] == segment.label]
            masks = [coco.annToMask(a).astype(bool) for a in mine]
            assert np.array_equal(np.any(masks, axis=0), segment.mask)
            assert [a["area"] for a in mine] == [int(i.mask.sum()) for i in segment.instances()]
            assert all(a["bbox"] == list(coco_mask.toBbox(coco.annToRLE(a))) for a in mine)
    squares = coco.loadAnns(coco.getAnnIds(imgIds=[4], catIds=[table.id("red")]))
    assert len(squares) == 2


def test_coco_panoptic_png_and_json(results, exported) -> None:
    out, table = exported
    panoptic = json.loads((out / "panoptic" / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in panoptic["categories"]}
    for annotation, (name, result) in zip(panoptic["annotations"], results):
        rgb = np.asarray(Image.open(out / "panoptic" / annotation["file_name"]), dtype=np.uint32)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        assert ids.shape == result.image_size and (ids > 0).all()
        assert sorted(int(i) for i in np.unique(ids)) == sorted(s["id"] for s in annotation["segments_info"])
        for segment in result.segments:
            infos = [s for s in annotation["segments_info"] if names[s["category_id"]] == segment.label]
            assert np.array_equal(np.isin(ids, [s["id"] for s in infos]), segment.mask)
            assert all(s["area"] == int((ids == s["id"]).sum()) for s in infos)


def test_voc_class_pngs_are_pixel_aligned_with_one_class_list(results, exported) -> None:
    out, table = exported
    classes = (out / "voc" / "class_names.txt").read_text().splitlines()
    assert classes[0] == "_unlabeled_" and all(classes[table.id(n)] == n for n in classes[1:])
    assert (out / "voc" / "ImageSets" / "Segmentation" / "all.txt").read_text().split() == [n for n, _ in results]
    for name, result in results:
        image = Image.open(out / "voc" / "SegmentationClass" / f"{name}.png")
        assert image.mode == "P" and image.size == (result.image_size[1], result.image_size[0])
        values = np.asarray(image)
        for segment in result.segments:
            assert (values[segment.mask] == classes.index(segment.label)).all()


def test_sixteen_bit_label_maps_past_255_ids(tmp_path: Path) -> None:
    ids = np.arange(40_000, dtype=np.int64).reshape(200, 200) % 1000
    path = tmp_path / "many.png"
    class_map_image(ids).save(path)
    assert np.array_equal(np.asarray(Image.open(path)).astype(np.int64), ids)
    small = tmp_path / "small.png"
    class_map_image(ids % 200).save(small)
    assert Image.open(small).mode == "P" and np.array_equal(np.asarray(Image.open(small)), ids % 200)


def rasterise(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.new("L", (size[1], size[0]), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points], fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def test_yolo_polygons_rasterise_back_to_the_instances(results, exported) -> None:
    out, table = exported
    data = (out / "yolo" / "data.yaml").read_text()
    names = table.names_by_id()
    assert f"nc: {table.max_id}" in data
    assert all(f'  {i - 1}: "{n}"' in data for i, n in names.items())
    for name, result in results:
        height, width = result.image_size
        lines = (out / "yolo" / "labels" / f"{name}.txt").read_text().splitlines()
        expected = [(s.label, i.mask) for s in result.segments for i in s.instances()]
        assert len(lines) == len(expected)
        for line, (label, mask) in zip(lines, expected):
            values = line.split()
            assert names[int(values[0]) + 1] == label
            points = np.round(np.array(values[1:], dtype=float).reshape(-1, 2) * [width, height])
            back = rasterise(points, (height, width))
            outline = binary_fill_holes(mask)  # YOLO polygons have no holes
            assert (back & outline).sum() / (back | outline).sum() > 0.9


def test_embeddings_npy_rows_are_segment_embeddings(results, exported) -> None:
    out, _ = exported
    for name, result in results:
        rows = np.load(out / "embeddings" / f"{name}.npy")
        assert rows.dtype == np.float32 and rows.shape[0] == len(result.segments)
        assert np.allclose(rows, np.stack([s.embedding for s in result.segments]), atol=1e-6)


def test_category_table_fixed_from_a_file_keeps_ids(results, exported, tmp_path: Path) -> None:
    out, table = exported
    loaded = CategoryTable.load(out / "categories.json")
    assert loaded.names_by_id() == table.names_by_id()
    assert loaded.id("a new name") == table.max_id + 1
    assert CategoryTable.load(out / "coco" / "instances.json").names_by_id() == table.names_by_id()
    (tmp_path / "names.txt").write_text("red\nblue\n")
    frozen = CategoryTable.load(tmp_path / "names.txt", frozen=True)
    exporter = RunExporter(tmp_path / "strict", ["coco", "voc"], frozen)
    squares = dict(results)["sub/squares"]
    exporter.add("squares", squares)
    exporter.finish()
    coco = COCO(str(tmp_path / "strict" / "coco" / "instances.json"))
    assert sorted(coco.cats[a["category_id"]]["name"] for a in coco.anns.values()) == ["blue", "red", "red"]
    values = np.asarray(Image.open(tmp_path / "strict" / "voc" / "SegmentationClass" / "squares.png"))
    grey = next(s for s in squares.segments if s.label not in ("red", "blue"))
    assert (values[grey.mask] == 0).all() and frozen.unmatched[grey.label] == 1


def test_segment_export_option_and_export_command_agree(tmp_path: Path) -> None:
    runner = CliRunner()
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        Image.fromarray(toy_scene(seed, size=(96, 128))[0]).save(photos / f"s{seed}.png")
    out = tmp_path / "out"
    toy = ["--preset", "toy", "--image-size", "96"]
    done = runner.invoke(app, ["segment", str(photos), "--out", str(out), *toy, "--export", "coco,voc,yolo,panoptic,embeddings"])
    assert done.exit_code == 0, done.output
    assert (out / "export" / "embeddings" / "s1.npy").is_file()
    again = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    first = json.loads((out / "export" / "coco" / "instances.json").read_text())
    second = json.loads((tmp_path / "again" / "coco" / "instances.json").read_text())
    assert first["annotations"] == second["annotations"] and first["categories"] == second["categories"]
    for name in ("s0", "s1"):
        assert np.array_equal(
            np.asarray(Image.open(out / "export" / "voc" / "SegmentationClass" / f"{name}.png")),
            np.asarray(Image.open(tmp_path / "again" / "voc" / "SegmentationClass" / f"{name}.png")),
        )
        result, _ = read_result(out / f"{name}.json")
        assert np.array_equal(result.label_map, np.asarray(Image.open(out / f"{name}.labels.png")))
    bad = runner.invoke(app, ["export", str(out), "--formats", "gif"])
    assert bad.exit_code == 1 and "Unknown export format" in bad.output


class AreaWriter:
    """A format made up for the test: one line per image, ``name total-area-of-named-segments``."""

    def __init__(self, out_dir: Path, categories: CategoryTable, options: ExportOptions) -> None:
        self.path, self.categories, self.lines = Path(out_dir) / "areas.txt", categories, []

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        area = sum(s.area for s in result.segments if self.categories.id(s.label) is not None)
        self.lines.append(f"{name} {area}")
        return []

    def finish(self) -> list[Path]:
        self.path.write_text("\n".join(self.lines) + "\n")
        return [self.path]


def test_every_format_is_a_writer_and_a_new_one_is_one_registry_entry(results, tmp_path: Path, monkeypatch) -> None:
    table = CategoryTable()
    assert all(isinstance(factory(tmp_path / "shape", table, ExportOptions()), ExportWriter) for factory in WRITERS.values())
    monkeypatch.setitem(WRITERS, "areas", AreaWriter)
    frozen = CategoryTable({"red": 1}, frozen=True)
    exporter = RunExporter(tmp_path / "plugged", ["areas", "voc"], frozen)
    for name, result in results:
        exporter.add(name, result)
    written = exporter.finish()
    assert tmp_path / "plugged" / "areas.txt" in written
    expected = [f"{name} {sum(s.area for s in r.segments if s.label == 'red')}" for name, r in results]
    assert (tmp_path / "plugged" / "areas.txt").read_text().splitlines() == expected
    assert int(expected[-1].split()[1]) > 0


def test_export_folder_refuses_embeddings(tmp_path: Path) -> None:
    from tagseg.errors import ConfigError

    with pytest.raises(ConfigError, match="no embeddings"):
        export_folder(tmp_path, tmp_path / "x", ["embeddings"])


def test_supervision_detections(results) -> None:
    pytest.importorskip("supervision")
    from tagseg.exports import to_detections

    squares = dict(results)["sub/squares"]
    table = CategoryTable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # supervision warns that it runs without OpenCV
        detections = to_detections(squares, table)
    instances = [(s, i.mask) for s in squares.segments for i in s.instances()]
    assert len(detections) == len(instances)
    assert list(detections.data["class_name"]) == [s.label for s, _ in instances]
    assert list(detections.class_id) == [table.id(s.label) for s, _ in instances]
    for row, (segment, mask) in enumerate(instances):
        assert np.array_equal(detections.mask[row], mask)
        x, y, w, h = mask_bbox(mask)
        assert list(detections.xyxy[row]) == [x, y, x + w - 1, y + h - 1]
    per_segment = to_detections(squares, instances=False)
    assert len(per_segment) == len(squares.segments) and list(per_segment.class_id) == list(range(len(squares.segments)))
