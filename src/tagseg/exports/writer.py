"""The shape every export format has, and the file helpers they share.

A writer is made for one output folder, one :class:`~tagseg.exports.categories.CategoryTable`
and the run's :class:`ExportOptions`; :meth:`ExportWriter.add` takes one image's result at a time
(per-image files are written at once) and :meth:`ExportWriter.finish` writes the run-level files.
Both return the paths they wrote.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

from PIL import Image

from tagseg.exports.categories import CategoryTable
from tagseg.files import is_uri, write_bytes_atomically
from tagseg.result import Instance, Segment, Segmentation

__all__ = [
    "DEFAULT_MIN_INSTANCE_AREA",
    "EXPORT_INFO",
    "ExportOptions",
    "ExportWriter",
    "classified_instances",
    "image_entry",
    "image_root_of",
    "relative_file_name",
    "write_json",
    "write_png",
    "write_text",
]

EXPORT_INFO = {"description": "tagseg export: open-vocabulary segments, one category per name"}
"""COCO ``info`` of the dataset exports (instances and panoptic)."""

DEFAULT_MIN_INSTANCE_AREA = 16
"""Instances (separate regions of a segment) smaller than this many pixels are left out of the
instance exports by default: speckles of a few pixels that k-means leaves at segment borders."""


@dataclass(frozen=True)
class ExportOptions:
    """What every dataset export of a run shares besides the category table.

    ``min_instance_area``: instances with fewer pixels are left out of COCO instances, COCO
    panoptic (their pixels stay unlabelled, id 0) and YOLO; 0 keeps every instance. VOC, a
    per-pixel class map, keeps every pixel. ``image_root``: COCO ``file_name`` (instances and
    panoptic ``images``) is each image's path relative to it; None: the deepest folder holding
    every image of the run (a single image: its folder).
    """

    min_instance_area: int = DEFAULT_MIN_INSTANCE_AREA
    image_root: str | Path | None = None

    def __post_init__(self) -> None:
        if self.min_instance_area < 0:
            raise ValueError(f"min_instance_area must be 0 or more, not {self.min_instance_area}")


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


def image_root_of(paths: Iterable[str | Path], image_root: str | Path | None = None) -> str | None:
    """The folder COCO ``file_name`` is relative to: ``image_root`` when given, else the deepest
    folder holding every one of ``paths`` (empty ones ignored). Local folders are absolute; URIs
    (``s3://bucket/photos``) keep their scheme and host. None when there is neither, or when the
    paths share no folder (local files and URIs, two buckets)."""
    if image_root is not None:
        return _joined(*_located(str(image_root)))
    located = {_located(os.path.dirname(str(path))) for path in paths if str(path)}
    if not located or len({location for location, _ in located}) > 1:
        return None
    [location] = {location for location, _ in located}
    common = (posixpath if location else os.path).commonpath([folder for _, folder in located])
    return _joined(location, common)


def relative_file_name(entry: dict[str, Any], image_path: str, root: str | None) -> dict[str, Any]:
    """A COCO ``images`` entry with ``file_name`` set to ``image_path`` relative to ``root`` (POSIX
    separators); unchanged when the image has no path or lies elsewhere than ``root``."""
    if not image_path or root is None:
        return entry
    (location, path), (root_location, root_folder) = _located(str(image_path)), _located(root)
    if location != root_location:
        return entry
    relative = posixpath.relpath(path, root_folder) if location else Path(os.path.relpath(path, root_folder)).as_posix()
    return {**entry, "file_name": relative}


def _located(path: str) -> tuple[str, str]:
    """``(scheme://host, path on it)`` of a URI; ``("", absolute path)`` of a local path."""
    if not is_uri(path):
        return "", os.path.abspath(path)
    scheme, _, rest = path.partition("://")
    host, _, inner = rest.partition("/")
    return f"{scheme}://{host}", posixpath.normpath("/" + inner)


def _joined(location: str, path: str) -> str:
    return location + path if location else path


def classified_instances(
    result: Segmentation, categories: CategoryTable, min_area: int = 0
) -> list[tuple[Segment, int, Instance]]:
    """``(segment, category id, instance)`` of every instance (:meth:`Segment.instances`) whose name
    the table knows and with at least ``min_area`` pixels, in result order."""
    found = []
    for segment in result.segments:
        category = categories.id(segment.label)
        if category is not None:
            found += [(segment, category, i) for i in segment.instances() if int(i.mask.sum()) >= min_area]
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
