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
    """One PNG per image (each instance of at least ``options.min_instance_area`` pixels its own
    panoptic segment, the rest id 0: unlabelled) and the run's JSON, whose ``images`` name the
    photos relative to the image root as COCO instances do."""

    def __init__(self, out_dir: str | Path, categories: CategoryTable, options: ExportOptions = ExportOptions()) -> None:
        self.folder = Path(out_dir) / "panoptic"
        self.categories = categories
        self.options = options
        self._images: list[dict[str, Any]] = []
        self._image_paths: list[str] = []
        self._annotations: list[dict[str, Any]] = []

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        image_id = len(self._images) + 1
        self._images.append(image_entry(image_id, name, result, image_path))
        self._image_paths.append(str(image_path))
        ids = np.zeros(result.image_size, dtype=np.uint32)
        infos = []
        for number, (segment, category, mask) in enumerate(
            classified_instances(result, self.categories, self.options.min_instance_area), start=1
        ):
            ids[mask] = number
            infos.append({
                "id": number, "category_id": category, "area": int(mask.sum()), "bbox": list(mask_bbox(mask)),
                "iscrowd": 0, "score": round(segment.score, 6), "segment_id": segment.id,
            })
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        self._annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": infos})
        return [write_png(Image.fromarray(rgb), self.folder / f"{name}.png")]

    def finish(self) -> list[Path]:
        root = image_root_of(self._image_paths, self.options.image_root)
        data = {
            "info": {**EXPORT_INFO, "image_root": str(root) if root is not None else None},
            "images": [relative_file_name(e, p, root) for e, p in zip(self._images, self._image_paths)],
            "annotations": self._annotations,
            "categories": self.categories.coco_categories(),
        }
        return [write_json(self.folder / "panoptic.json", data)]
