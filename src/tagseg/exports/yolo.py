"""YOLO segmentation: ``yolo/labels/NAME.txt`` (one polygon per instance, class = category id - 1) and ``data.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

from tagseg.exports.categories import CategoryTable
from tagseg.exports.writer import ExportOptions, classified_instances, write_text
from tagseg.masks import region_polygon
from tagseg.result import Segmentation

__all__ = ["YoloWriter"]


class YoloWriter:
    """One line per instance: ``class x1 y1 x2 y2 ...``, coordinates normalised to [0, 1].

    Every polygon is one that YOLO's label checks accept (at least 3 vertices, positive area:
    :func:`~tagseg.masks.region_polygon`), the outer outline simplified within ``polygon_tolerance``
    pixels. The format has no holes: a region's holes are filled (COCO instances keep them).
    Instances under ``options.min_instance_area`` pixels are left out.
    """

    def __init__(
        self, out_dir: str | Path, categories: CategoryTable, options: ExportOptions = ExportOptions(), *,
        polygon_tolerance: float = 1.0,
    ) -> None:
        self.folder = Path(out_dir) / "yolo"
        self.categories = categories
        self.options = options
        self.polygon_tolerance = polygon_tolerance

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        height, width = result.image_size
        lines = []
        for _, category, instance in classified_instances(result, self.categories, self.options.min_instance_area):
            polygon = region_polygon(instance.mask, self.polygon_tolerance) / [width, height]
            lines.append(" ".join([str(category - 1), *(f"{v:.6f}" for v in polygon.ravel())]))
        return [write_text(self.folder / "labels" / f"{name}.txt", "\n".join(lines) + "\n" if lines else "")]

    def finish(self) -> list[Path]:
        names = self.categories.names_by_id()
        yaml_names = "".join(
            f"  {i - 1}: {json.dumps(names.get(i, f'_unused_{i}'), ensure_ascii=False)}\n"
            for i in range(1, self.categories.max_id + 1)
        )
        text = (
            "# tagseg export: put the images under images/ with the label files' names\n"
            f"path: .\ntrain: images\nval: images\nnc: {self.categories.max_id}\nnames:\n{yaml_names}"
        )
        return [write_text(self.folder / "data.yaml", text)]
