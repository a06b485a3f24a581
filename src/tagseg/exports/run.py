"""Dataset exports of a whole run, every format with one category table.

:class:`RunExporter` takes results one image at a time (in memory from the pipeline, or read back
from a ``tagseg segment`` folder by :func:`read_result`) and hands each to the writer of every
chosen format (:data:`WRITERS`, one module per format), all sharing one
:class:`~tagseg.exports.categories.CategoryTable`, so a name has the same id everywhere. Layout
under the export folder::

    categories.json                      the table used (pass it back to keep ids in later runs)
    coco/instances.json                  COCO instances: one annotation per instance, compressed RLE
    panoptic/panoptic.json, panoptic/NAME.png   COCO panoptic (segment id = R + 256 G + 256^2 B)
    voc/SegmentationClass/NAME.png, voc/class_names.txt, voc/ImageSets/Segmentation/all.txt
    yolo/labels/NAME.txt, yolo/data.yaml YOLO segmentation polygons (class = category id - 1)
    embeddings/NAME.npy                  (S, dim) float32, row i = segment i's embedding

Instances are the separate regions of a segment (:meth:`~tagseg.result.Segment.instances`); the
semantic exports (VOC) give all of them the segment's class. :class:`ExportOptions` holds what
the formats share besides the categories: the minimum instance area (speckles left out of the
instance formats) and the image root COCO ``file_name`` is relative to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tagseg.errors import ConfigError
from tagseg.exports.categories import CategoryTable
from tagseg.exports.coco import RESULTS_FILE, CocoWriter
from tagseg.exports.embeddings import EmbeddingsWriter
from tagseg.exports.panoptic import PanopticWriter
from tagseg.exports.voc import VocWriter
from tagseg.exports.writer import ExportOptions, ExportWriter, write_json
from tagseg.exports.yolo import YoloWriter
from tagseg.result import Segmentation

__all__ = [
    "EXPORT_FORMATS",
    "WRITERS",
    "ExportOptions",
    "RunExporter",
    "check_export_formats",
    "export_folder",
    "find_results",
    "read_result",
]

WRITERS: dict[str, Callable[[Path, CategoryTable, ExportOptions], ExportWriter]] = {
    "coco": CocoWriter.for_export,
    "panoptic": PanopticWriter,
    "voc": lambda out, categories, options: VocWriter(out, categories),
    "yolo": YoloWriter,
    "embeddings": lambda out, categories, options: EmbeddingsWriter(out, categories),
}
"""Export format name -> writer factory ``(export folder, category table, options)``; a new format is one entry here."""

EXPORT_FORMATS = tuple(WRITERS)
"""The formats tagseg ships."""


def check_export_formats(formats: Iterable[str]) -> frozenset[str]:
    """``formats`` as a set, or a :class:`ConfigError` naming the unknown ones and the known ones."""
    chosen = frozenset(formats)
    unknown = chosen - set(WRITERS)
    if unknown:
        raise ConfigError(f"Unknown export format(s): {', '.join(sorted(unknown))}. Choose from: {', '.join(WRITERS)}.")
    return chosen


class RunExporter:
    """Writes the chosen ``formats`` for every image :meth:`add`-ed, then the run files on :meth:`finish`."""

    def __init__(
        self, out_dir: str | Path, formats: Iterable[str], categories: CategoryTable | None = None,
        options: ExportOptions = ExportOptions(),
    ) -> None:
        self.formats = check_export_formats(formats)
        if not self.formats:
            raise ConfigError(f"No export format given. Choose from: {', '.join(WRITERS)}.")
        self.out = Path(out_dir)
        self.categories = categories or CategoryTable()
        self.options = options
        self.writers = {
            fmt: factory(self.out, self.categories, options) for fmt, factory in WRITERS.items() if fmt in self.formats
        }

    def add(
        self, name: str, result: Segmentation, image_path: str | Path = "", *, formats: Iterable[str] | None = None
    ) -> list[Path]:
        """Export one image's result under the relative ``name`` (no suffix); returns the files written.

        ``formats`` narrows the exporter's formats for this image. Names a frozen category table
        lacks are left out and counted in its ``unmatched``.
        """
        wanted = self.formats if formats is None else self.formats & frozenset(formats)
        self.categories.unmatched.update(s.label for s in result.segments if self.categories.id(s.label) is None)
        written = []
        for fmt, writer in self.writers.items():
            if fmt in wanted:
                written += writer.add(name, result, image_path)
        return written

    def finish(self) -> list[Path]:
        """Write the run-level files (COCO and panoptic JSON, class lists, data.yaml, categories.json)."""
        written = [write_json(self.out / "categories.json", self.categories.coco_categories())]
        for writer in self.writers.values():
            written += writer.finish()
        return written


def read_result(path: str | Path) -> tuple[Segmentation, str]:
    """A :class:`Segmentation` and its image path from a per-image JSON file of ``tagseg segment``.

    See :meth:`Segmentation.from_record`: embeddings are not stored there (None); ``cluster_map`` is the label map.
    """
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    return Segmentation.from_record(record), record["image"].get("path", "")


def find_results(folder: str | Path, skip: Path | None = None) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of every per-image JSON of a ``tagseg segment`` output folder, sorted."""
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
    folder: str | Path, out_dir: str | Path, formats: Iterable[str], categories: CategoryTable | None = None,
    options: ExportOptions = ExportOptions(),
) -> tuple[int, list[Path]]:
    """Export every result of a finished ``tagseg segment`` folder; returns (images, run files written).

    A folder with no results raises :class:`ConfigError` and writes nothing (an empty dataset
    is never what was meant).
    """
    exporter = RunExporter(out_dir, formats, categories, options)
    if "embeddings" in exporter.formats:
        raise ConfigError("Per-image JSON files hold no embeddings; use tagseg segment ... --export embeddings.")
    results = list(find_results(folder, skip=Path(out_dir)))
    if not results:
        raise ConfigError(
            f"{folder} holds no tagseg results (the per-image NAME.json files of tagseg segment), so there is "
            "nothing to export: pass the --out folder of a finished tagseg segment run."
        )
    count = 0
    for name, path in results:
        try:
            result, image_path = read_result(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path} is not a readable tagseg result: {error}") from None
        exporter.add(name, result, image_path)
        count += 1
    return count, exporter.finish()
