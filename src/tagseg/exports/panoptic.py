"""COCO panoptic: ``panoptic/NAME.png`` (segment id = R + 256 G + 256^2 B) and ``panoptic/panoptic.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tagseg.exports.categories import CategoryTable
from tagseg.exports.writer import EXPORT_INFO, classified_instances, image_entry, write_json, write_png
from tagseg.masks import mask_bbox
from tagseg.result import Segmentation

__all__ = ["PanopticWriter"]


class PanopticWriter:
    """One PNG per image (each instance its own panoptic segment) and the run's JSON."""

    def __init__(self, out_dir: str | Path, categories: CategoryTable) -> None:
        self.folder = Path(out_dir) / "panoptic"
        self.categories = categories
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        image_id = len(self._images) + 1
        self._images.append(image_entry(image_id, name, result, image_path))
        ids = np.zeros(result.image_size, dtype=np.uint32)
        infos = []
        for number, (segment, category, mask) in enumerate(classified_instances(result, self.categories), start=1):
            ids[mask] = number
            infos.append({
                "id": number, "category_id": category, "area": int(mask.sum()), "bbox": list(mask_bbox(mask)),
                "iscrowd": 0, "score": round(segment.score, 6), "segment_id": segment.id,
            })
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        self._annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": infos})
        return [write_png(Image.fromarray(rgb), self.folder / f"{name}.png")]

    def finish(self) -> list[Path]:
        data = {
            "info": EXPORT_INFO, "images": self._images, "annotations": self._annotations,
            "categories": self.categories.coco_categories(),
        }
        return [write_json(self.folder / "panoptic.json", data)]
