"""COCO JSON with scores: the dataset export ``coco/instances.json`` and the run file ``results.coco.json``.

One writer serves both. Annotations are spooled to an anonymous temporary file as images come
(never the whole run in memory) and the COCO document is streamed from it on :meth:`CocoWriter.finish`.
Masks are compressed COCO RLE strings; every annotation carries the segment's score.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

from tagseg import __version__
from tagseg.exports.categories import CategoryTable
from tagseg.exports.writer import (
    EXPORT_INFO,
    ExportOptions,
    classified_instances,
    image_entry,
    image_root_of,
    relative_file_name,
)
from tagseg.files import write_atomically
from tagseg.masks import coco_rle_string, mask_bbox, mask_to_rle
from tagseg.result import Segmentation

__all__ = ["RESULTS_FILE", "CocoWriter"]

RESULTS_FILE = "results.coco.json"
"""The run file of ``tagseg segment``: every segment of the run in COCO, with scores."""


class CocoWriter:
    """COCO instances with scores, written to ``path`` on :meth:`finish`.

    ``per_instance``: one annotation per instance (:meth:`~tagseg.result.Segment.instances`: a SAM
    mask scored by its predicted IoU with its ``proposal`` index, or a segment's separate region;
    with its ``segment_id``), else one per segment. ``run_file``: the layout of ``results.coco.json``: one
    image or annotation per line (ASCII-escaped), ``info`` naming the tagseg version, models and
    settings of the run, categories without panoptic's ``isthing``. ``options`` apply to both: the
    minimum instance area (instance annotations only), and ``file_name`` relative to the image root
    (recorded in ``info.image_root``). Names a frozen ``categories`` table lacks are left out.
    """

    def __init__(
        self, path: str | Path, categories: CategoryTable | None = None, *, per_instance: bool = True, run_file: bool = False,
        options: ExportOptions = ExportOptions(),
    ) -> None:
        self.path = Path(path)
        self.categories = categories if categories is not None else CategoryTable()
        self.per_instance = per_instance
        self.run_file = run_file
        self.options = options
        self._image_paths: list[str] = []  # file names are made relative to the image root on finish
        self.settings: dict[str, Any] = {}
        self.models: dict[str, str] = {}
        self._images = 0
        self._annotations = 0
        self._spool: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")

    @classmethod
    def for_export(cls, out_dir: str | Path, categories: CategoryTable, options: ExportOptions = ExportOptions()) -> "CocoWriter":
        """The dataset export ``OUT/coco/instances.json``: one annotation per instance."""
        return cls(Path(out_dir) / "coco" / "instances.json", categories, options=options)

    @classmethod
    def for_run(cls, out_dir: str | Path, options: ExportOptions = ExportOptions()) -> "CocoWriter":
        """The run file ``OUT/results.coco.json``: one annotation per segment, categories in order of appearance."""
        return cls(Path(out_dir) / RESULTS_FILE, per_instance=False, run_file=True, options=options)

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        """Spool one image and its annotations; nothing is written to ``path`` yet."""
        self.settings = self.settings or dict(result.settings)
        self.models = self.models or dict(result.models)
        self._images += 1
        if self.per_instance:
            regions = [(s, c, i.mask, i.score, i.proposal) for s, c, i in classified_instances(
                result, self.categories, self.options.min_instance_area
            )]
        else:
            labelled = [(segment, self.categories.id(segment.label)) for segment in result.segments]
            regions = [(s, c, s.mask, s.score, None) for s, c in labelled if c is not None]
        annotations = []
        for segment, category, mask, score, proposal in regions:
            self._annotations += 1
            rle = mask_to_rle(mask)
            annotation = {
                "id": self._annotations,
                "image_id": self._images,
                "category_id": category,
                "segmentation": {"size": rle["size"], "counts": coco_rle_string(rle["counts"])},
                "area": int(mask.sum()),
                "bbox": list(mask_bbox(mask)),
                "score": round(score, 6),
                "iscrowd": 0,
            }
            if self.per_instance:
                annotation["segment_id"] = segment.id  # which segment the instance belongs to
            if proposal is not None:
                annotation["proposal"] = proposal  # which SAM mask it is
            annotations.append(annotation)
        entry = image_entry(self._images, name, result, image_path)
        self._image_paths.append(str(image_path))
        self._spool.write(json.dumps({"image": entry, "annotations": annotations}, ensure_ascii=False) + "\n")
        return []

    def finish(self) -> list[Path]:
        """Write the COCO file from the spool (atomically) and release the spool."""
        try:
            write_atomically(self.path, self._write)
        finally:
            self.close()
        return [self.path]

    def close(self) -> None:
        """Drop the spool without writing (a run that failed); :meth:`finish` calls it too."""
        self._spool.close()

    def _write(self, path: Path) -> None:
        line = "\n" if self.run_file else ""
        sep = "," + (line or " ")

        def dumps(data: Any) -> str:
            return json.dumps(data, ensure_ascii=self.run_file)

        root = image_root_of(self._image_paths, self.options.image_root)
        with path.open("w", encoding="utf-8") as out:
            out.write('{"info": ' + dumps(self._info(root)) + sep + '"images": [')
            for index, entry in enumerate(self._spooled("image")):
                entry = relative_file_name(entry, self._image_paths[index], root)
                out.write((sep if index else line) + dumps(entry))
            out.write("]" + sep + '"annotations": [')
            index = 0
            for image_annotations in self._spooled("annotations"):
                for annotation in image_annotations:
                    out.write((sep if index else line) + dumps(annotation))
                    index += 1
            categories = self.categories.coco_categories(isthing=not self.run_file)
            out.write("]" + sep + '"categories": ' + dumps(categories) + "}" + line)

    def _spooled(self, key: str) -> Iterator[Any]:
        self._spool.seek(0)
        for text in self._spool:
            yield json.loads(text)[key]

    def _info(self, image_root: str | None) -> dict[str, Any]:
        if not self.run_file:
            return {**EXPORT_INFO, "image_root": image_root}
        return {
            "description": "tagseg results: open-vocabulary segments named by the model, one category per name",
            "version": __version__,
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "models": self.models,
            "settings": self.settings,
            "image_root": image_root,
        }
