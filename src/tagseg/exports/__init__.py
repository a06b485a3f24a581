"""Dataset exports of tagseg results and the ``supervision`` adapter.

* :class:`RunExporter` / :func:`export_folder` — every chosen format for a whole run, one module
  per format with the same writer shape (:class:`ExportWriter`: ``add`` an image, ``finish``):
  COCO instances (:class:`CocoWriter`, also the run file ``results.coco.json``), COCO panoptic,
  Pascal-VOC ``SegmentationClass``, YOLO segmentation and ``.npy`` embeddings.
* :class:`CategoryTable` — one name-to-id table per run, loadable from a file for later runs.
* :class:`ExportOptions` — the minimum instance area (default :data:`DEFAULT_MIN_INSTANCE_AREA`)
  and the image root of COCO ``file_name``.
* :func:`to_detections` — ``supervision.Detections`` (optional dependency).
* :func:`outer_polygon` — polygon of a mask region (from :mod:`tagseg.masks`).
"""

from tagseg.exports.categories import CategoryTable
from tagseg.exports.coco import RESULTS_FILE, CocoWriter
from tagseg.exports.detections import to_detections
from tagseg.exports.run import (
    EXPORT_FORMATS,
    WRITERS,
    RunExporter,
    check_export_formats,
    export_folder,
    find_results,
    read_result,
)
from tagseg.exports.voc import class_map_image
from tagseg.exports.writer import DEFAULT_MIN_INSTANCE_AREA, ExportOptions, ExportWriter
from tagseg.masks import outer_polygon

__all__ = [
    "CategoryTable",
    "CocoWriter",
    "DEFAULT_MIN_INSTANCE_AREA",
    "EXPORT_FORMATS",
    "ExportOptions",
    "ExportWriter",
    "RESULTS_FILE",
    "RunExporter",
    "WRITERS",
    "check_export_formats",
    "class_map_image",
    "export_folder",
    "find_results",
    "outer_polygon",
    "read_result",
    "to_detections",
]
