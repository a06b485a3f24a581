"""COCO panoptic: ``panoptic/NAME.png`` (segment id = R + 256 G + 256^2 B) and ``panoptic/panoptic.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tagseg.exports.categories import CategoryTable
from tagseg.exports.writer import (
    EXPORT_INFO,
    ExportOptions,
    classified_instances,
    image_entry,
    image_root_of,
    relative_file_name,
    write_json,
    write_png,
)
from tagseg.masks import mask_bbox
from tagseg.result import Segmentation

__all__ = ["PanopticWriter"]


class PanopticWriter:
    """One PNG per image and the run's JSON, whose ``images`` name the photos relative to the image
    root as COCO instances do.

    Each thing instance (a SAM mask, or a k-means segment's separate region) of at least
    ``options.min_instance_area`` pixels is its own panoptic segment (smaller ones: id 0, unlabelled);
    a category's stuff (the pixels of a SAM result no mask covered) is one segment per image. A
    category is stuff (``isthing`` 0) when all its instances in the run were stuff.
    """

    def __init__(self, out_dir: str | Path, categories: CategoryTable, options: ExportOptions = ExportOptions()) -> None:
        self.folder = Path(out_dir) / "panoptic"
        self.categories = categories
        self.options = options
        self._images: list[dict[str, Any]] = []
        self._image_paths: list[str] = []
        self._annotations: list[dict[str, Any]] = []
        self._things: set[int] = set()
        self._stuff: set[int] = set()

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        image_id = len(self._images) + 1
        self._images.append(image_entry(image_id, name, result, image_path))
        self._image_paths.append(str(image_path))
        ids = np.zeros(result.image_size, dtype=np.uint32)
        infos: list[dict[str, Any]] = []
        stuff: dict[int, int] = {}  # category -> its stuff segment's position in infos
        for segment, category, instance in classified_instances(result, self.categories, self.options.min_instance_area):
            (self._things if instance.thing else self._stuff).add(category)
            if not instance.thing and category in stuff:  # more stuff of a category in this image: the same segment
                info = infos[stuff[category]]
                ids[instance.mask] = info["id"]
                info["area"] += int(instance.mask.sum())
                info["bbox"] = list(mask_bbox(ids == info["id"]))
                continue
            if not instance.thing:
                stuff[category] = len(infos)
            number = len(infos) + 1
            ids[instance.mask] = number
            infos.append({
                "id": number, "category_id": category, "area": int(instance.mask.sum()), "bbox": list(mask_bbox(instance.mask)),
                "iscrowd": 0, "score": round(instance.score, 6), "segment_id": segment.id,
            })
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        self._annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": infos})
        return [write_png(Image.fromarray(rgb), self.folder / f"{name}.png")]

    def finish(self) -> list[Path]:
        root = image_root_of(self._image_paths, self.options.image_root)
        data = {
            "info": {**EXPORT_INFO, "image_root": root},
            "images": [relative_file_name(e, p, root) for e, p in zip(self._images, self._image_paths)],
            "annotations": self._annotations,
            "categories": self.categories.coco_categories(stuff=self._stuff - self._things),
        }
        return [write_json(self.folder / "panoptic.json", data)]
