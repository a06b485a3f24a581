"""The shape every export format has, and the file helpers they share.

A writer is made for one output folder and one :class:`~tagseg.exports.categories.CategoryTable`;
:meth:`ExportWriter.add` takes one image's result at a time (per-image files are written at once)
and :meth:`ExportWriter.finish` writes the run-level files. Both return the paths they wrote.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from tagseg.exports.categories import CategoryTable
from tagseg.files import write_bytes_atomically
from tagseg.result import Instance, Segment, Segmentation

__all__ = ["EXPORT_INFO", "ExportWriter", "classified_instances", "image_entry", "write_json", "write_png", "write_text"]

EXPORT_INFO = {"description": "tagseg export: open-vocabulary segments, one category per name"}
"""COCO ``info`` of the dataset exports (instances and panoptic)."""


@runtime_checkable
class ExportWriter(Protocol):
    """One export format: ``add`` each image, then ``finish`` the run."""

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        """Export one image's result under the relative ``name`` (no suffix); the files written."""
        ...

    def finish(self) -> list[Path]:
        """Write the run-level files; the files written."""
        ...


def image_entry(image_id: int, name: str, result: Segmentation, image_path: str | Path = "") -> dict[str, Any]:
    """A COCO ``images`` entry; ``file_name`` is the image path, else the export name."""
    height, width = result.image_size
    return {"id": image_id, "file_name": str(image_path or name), "height": height, "width": width}


def classified_instances(result: Segmentation, categories: CategoryTable) -> list[tuple[Segment, int, Instance]]:
    """``(segment, category id, instance)`` of every instance (:meth:`Segment.instances`) whose name
    the table knows, in result order."""
    found = []
    for segment in result.segments:
        category = categories.id(segment.label)
        if category is not None:
            found += [(segment, category, instance) for instance in segment.instances()]
    return found


def write_png(image: Image.Image, path: Path) -> Path:
    """Save ``image`` as a PNG at ``path`` atomically."""
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomically(path, buffer.getvalue())
    return path


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` at ``path`` atomically."""
    write_bytes_atomically(path, text.encode("utf-8"))
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as one line of UTF-8 JSON at ``path`` atomically."""
    return write_text(path, json.dumps(data, ensure_ascii=False))
