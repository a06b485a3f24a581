"""Dataset exports of tagseg results and the ``supervision`` adapter.

* :class:`RunExporter` / :func:`export_folder` — COCO instances, COCO panoptic, Pascal-VOC
  ``SegmentationClass``, YOLO segmentation and ``.npy`` embeddings for a whole run.
* :class:`CategoryTable` — one name-to-id table per run, loadable from a file for later runs.
* :func:`to_detections` — ``supervision.Detections`` (optional dependency).
* :func:`outer_polygon` — polygon of a mask region (numpy only).
"""

from tagseg.exports.categories import CategoryTable
from tagseg.exports.detections import to_detections
from tagseg.exports.polygons import outer_polygon
from tagseg.exports.run import EXPORT_FORMATS, RunExporter, class_map_image, export_folder, find_results, read_result

__all__ = [
    "CategoryTable",
    "EXPORT_FORMATS",
    "RunExporter",
    "class_map_image",
    "export_folder",
    "find_results",
    "outer_polygon",
    "read_result",
    "to_detections",
]
