"""Dataset exports of a whole run: COCO instances, COCO panoptic, Pascal-VOC class PNGs, YOLO polygons.

:class:`RunExporter` takes results one image at a time (in memory from the pipeline, or read back
from a ``tagseg segment`` folder by :func:`read_result`) and writes every format with one
:class:`~tagseg.exports.categories.CategoryTable`, so a name has the same id everywhere. Layout
under the export folder::

    categories.json                      the table used (pass it back to keep ids in later runs)
    coco/instances.json                  COCO instances: one annotation per instance, compressed RLE
    panoptic/panoptic.json, panoptic/NAME.png   COCO panoptic (segment id = R + 256 G + 256^2 B)
    voc/SegmentationClass/NAME.png, voc/class_names.txt, voc/ImageSets/Segmentation/all.txt
    yolo/labels/NAME.txt, yolo/data.yaml YOLO segmentation polygons (class = category id - 1)
    embeddings/NAME.npy                  (S, dim) float32, row i = segment i's embedding

Instances are the separate regions of a segment (:meth:`~tagseg.result.Segment.instances`); the
semantic exports (VOC) give all of them the segment's class.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from tagseg.errors import ConfigError
from tagseg.exports.categories import CategoryTable
from tagseg.exports.polygons import outer_polygon
from tagseg.render import palette
from tagseg.result import Segment, Segmentation, mask_bbox, mask_to_rle, rle_to_mask

__all__ = ["EXPORT_FORMATS", "RunExporter", "class_map_image", "export_folder", "find_results", "read_result"]

EXPORT_FORMATS = ("coco", "panoptic", "voc", "yolo", "embeddings")


def class_map_image(class_map: np.ndarray) -> Image.Image:
    """A lossless PNG-ready image of integer ids: palette (mode ``P``, 0 black) below 255, else 16-bit."""
    if int(class_map.max(initial=0)) < 255:
        image = Image.fromarray(class_map.astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, *palette(254).ravel().tolist()])
        return image
    if int(class_map.max()) > 65535:
        raise ValueError("more than 65535 ids do not fit a 16-bit PNG")
    return Image.fromarray(class_map.astype(np.uint16))


class RunExporter:
    """Writes the chosen ``formats`` for every image :meth:`add`-ed, then the run files on :meth:`finish`."""

    def __init__(
        self,
        out_dir: str | Path,
        formats: Iterable[str],
        categories: CategoryTable | None = None,
        *,
        polygon_tolerance: float = 1.0,
    ) -> None:
        self.formats = frozenset(formats)
        unknown = self.formats - set(EXPORT_FORMATS)
        if unknown or not self.formats:
            raise ConfigError(
                f"Unknown export format(s): {', '.join(sorted(unknown)) or '(none given)'}. "
                f"Choose from: {', '.join(EXPORT_FORMATS)}."
            )
        self.out = Path(out_dir)
        self.categories = categories or CategoryTable()
        self.polygon_tolerance = polygon_tolerance
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._panoptic: list[dict[str, Any]] = []
        self._voc_names: list[str] = []

    def add(
        self, name: str, result: Segmentation, image_path: str | Path = "", *, formats: Iterable[str] | None = None
    ) -> list[Path]:
        """Export one image's result under the relative ``name`` (no suffix); returns the files written.

        ``formats`` narrows the exporter's formats for this image.
        """
        wanted = self.formats if formats is None else self.formats & frozenset(formats)
        height, width = result.image_size
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": str(image_path or name), "height": height, "width": width})
        classes = [self.categories.id(segment.label) for segment in result.segments]
        written = []
        instances = [(s, c, i) for s, c in zip(result.segments, classes) if c is not None for i in s.instances()]
        if "coco" in wanted:
            self._add_coco(image_id, instances)
        if "panoptic" in wanted:
            written.append(self._add_panoptic(image_id, name, result, instances))
        if "voc" in wanted:
            lookup = np.array([c or 0 for c in classes] or [0], dtype=np.int64)
            written.append(self._write_png(class_map_image(lookup[result.label_map]), self.out / "voc" / "SegmentationClass" / f"{name}.png"))
            self._voc_names.append(name)
        if "yolo" in wanted:
            written.append(self._add_yolo(name, result, instances))
        if "embeddings" in wanted:
            written.append(self._add_embeddings(name, result))
        return written

    def _add_coco(self, image_id: int, instances: list[tuple[Segment, int, np.ndarray]]) -> None:
        from tagseg.api import coco_rle_string

        for segment, category, mask in instances:
            rle = mask_to_rle(mask)
            self._annotations.append({
                "id": len(self._annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "segmentation": {"size": rle["size"], "counts": coco_rle_string(rle["counts"])},
                "area": int(mask.sum()),
                "bbox": list(mask_bbox(mask)),
                "score": round(segment.score, 6),
                "iscrowd": 0,
                "segment_id": segment.id,
            })

    def _add_panoptic(self, image_id: int, name: str, result: Segmentation, instances: list) -> Path:
        ids = np.zeros(result.image_size, dtype=np.uint32)
        infos = []
        for number, (segment, category, mask) in enumerate(instances, start=1):
            ids[mask] = number
            infos.append({
                "id": number, "category_id": category, "area": int(mask.sum()), "bbox": list(mask_bbox(mask)),
                "iscrowd": 0, "score": round(segment.score, 6), "segment_id": segment.id,
            })
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        self._panoptic.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": infos})
        return self._write_png(Image.fromarray(rgb), self.out / "panoptic" / f"{name}.png")

    def _add_yolo(self, name: str, result: Segmentation, instances: list) -> Path:
        height, width = result.image_size
        lines = []
        for _, category, mask in instances:
            polygon = outer_polygon(mask, self.polygon_tolerance) / [width, height]
            lines.append(" ".join([str(category - 1), *(f"{v:.6f}" for v in polygon.ravel())]))
        path = self.out / "yolo" / "labels" / f"{name}.txt"
        _write_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
        return path

    def _add_embeddings(self, name: str, result: Segmentation) -> Path:
        if any(s.embedding is None for s in result.segments):
            raise ConfigError(
                "The result has no segment embeddings (per-image JSON files do not store them); "
                "export embeddings while segmenting: tagseg segment ... --export embeddings."
            )
        rows = np.stack([s.embedding for s in result.segments]).astype(np.float32) if result.segments else np.zeros((0, 0), np.float32)
        buffer = BytesIO()
        np.save(buffer, rows)
        path = self.out / "embeddings" / f"{name}.npy"
        _write_atomic(path, buffer.getvalue())
        return path

    def finish(self) -> list[Path]:
        """Write the run-level files (COCO and panoptic JSON, class lists, data.yaml, categories.json)."""
        categories = self.categories.coco_categories()
        written = [self.out / "categories.json"]
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(written[0], categories)
        info = {"description": "tagseg export: open-vocabulary segments, one category per name"}
        if "coco" in self.formats:
            written.append(self.out / "coco" / "instances.json")
            _write_json(written[-1], {"info": info, "images": self._images, "annotations": self._annotations, "categories": categories})
        if "panoptic" in self.formats:
            written.append(self.out / "panoptic" / "panoptic.json")
            _write_json(written[-1], {"info": info, "images": self._images, "annotations": self._panoptic, "categories": categories})
        names = self.categories.names_by_id()
        if "voc" in self.formats:
            lines = ["_unlabeled_", *(names.get(i, f"_unused_{i}") for i in range(1, self.categories.max_id + 1))]
            written += [self.out / "voc" / "class_names.txt", self.out / "voc" / "ImageSets" / "Segmentation" / "all.txt"]
            _write_atomic(written[-2], ("\n".join(lines) + "\n").encode("utf-8"))
            _write_atomic(written[-1], "".join(f"{n}\n" for n in self._voc_names).encode("utf-8"))
        if "yolo" in self.formats:
            yaml_names = "".join(
                f"  {i - 1}: {json.dumps(names.get(i, f'_unused_{i}'), ensure_ascii=False)}\n"
                for i in range(1, self.categories.max_id + 1)
            )
            text = f"# tagseg export: put the images under images/ with the label files' names\npath: .\ntrain: images\nval: images\nnc: {self.categories.max_id}\nnames:\n{yaml_names}"
            written.append(self.out / "yolo" / "data.yaml")
            _write_atomic(written[-1], text.encode("utf-8"))
        return written

    def _write_png(self, image: Image.Image, path: Path) -> Path:
        buffer = BytesIO()
        image.save(buffer, format="PNG")
        _write_atomic(path, buffer.getvalue())
        return path


def read_result(path: str | Path) -> tuple[Segmentation, str]:
    """A :class:`Segmentation` and its image path from a per-image JSON file of ``tagseg segment``.

    Masks come from the RLE; embeddings are not stored there (None); ``cluster_map`` is the label map.
    """
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    height, width = record["image"]["height"], record["image"]["width"]
    label_map = np.zeros((height, width), dtype=np.int32)
    segments = []
    for data in record["segments"]:
        mask = rle_to_mask(data["rle"])
        label_map[mask] = data["id"]
        segments.append(Segment(id=data["id"], label=data["label"], score=data["score"], mask=mask, cluster_ids=data["cluster_ids"]))
    result = Segmentation(label_map, segments, label_map.copy(), record.get("settings", {}), record.get("models", {}))
    return result, record["image"].get("path", "")


def find_results(folder: str | Path, skip: Path | None = None) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of every per-image JSON of a ``tagseg segment`` output folder, sorted."""
    from tagseg.api import RESULTS_FILE

    root = Path(folder)
    for path in sorted(root.rglob("*.json")):
        if path.name == RESULTS_FILE or (skip is not None and path.resolve().is_relative_to(skip.resolve())):
            continue
        if _is_result(path):
            yield path.relative_to(root).with_suffix("").as_posix(), path


def _is_result(path: Path) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "segments" in record and "tagseg_version" in record


def export_folder(
    folder: str | Path, out_dir: str | Path, formats: Iterable[str], categories: CategoryTable | None = None
) -> tuple[int, list[Path]]:
    """Export every result of a finished ``tagseg segment`` folder; returns (images, run files written)."""
    exporter = RunExporter(out_dir, formats, categories)
    if "embeddings" in exporter.formats:
        raise ConfigError("Per-image JSON files hold no embeddings; use tagseg segment ... --export embeddings.")
    count = 0
    for name, path in find_results(folder, skip=Path(out_dir)):
        try:
            result, image_path = read_result(path)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"{path} is not a readable tagseg result: {error}") from None
        exporter.add(name, result, image_path)
        count += 1
    return count, exporter.finish()


def _write_json(path: Path, data: Any) -> None:
    _write_atomic(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def _write_atomic(path: Path, data: bytes) -> None:
    from tagseg.api import _write_atomic as write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, data)
