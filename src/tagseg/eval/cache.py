"""Per-image prediction cache, keyed by dataset, image id and the pipeline settings.

Layout: ``<root>/<settings hash>/settings.json`` and, per image, ``<dataset>/<image id>.npz``
(the segment index map) next to ``<image id>.json`` (segment names and scores).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tagseg.files import write_atomically, write_bytes_atomically
from tagseg.result import Segmentation


@dataclass(frozen=True)
class Prediction:
    """What scoring needs of a segmentation: the segment index map (at the size the segmenter got the image) and names."""

    label_map: np.ndarray
    names: list[str]
    scores: list[float]

    @classmethod
    def from_segmentation(cls, result: Segmentation) -> "Prediction":
        return cls(result.label_map, result.labels, [s.score for s in result.segments])


def settings_key(settings: Mapping[str, Any]) -> str:
    """Short stable hash of JSON-serialisable settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PredictionCache:
    """Stores and finds predictions for one set of pipeline settings under ``root``.

    ``hits`` counts the predictions :meth:`get` found, ``stored`` those :meth:`put` wrote.
    """

    def __init__(self, root: str | Path, settings: Mapping[str, Any]) -> None:
        self.directory = Path(root).expanduser() / settings_key(settings)
        self.hits = 0
        self.stored = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        settings_file = self.directory / "settings.json"
        if not settings_file.exists():
            write_bytes_atomically(settings_file, json.dumps(settings, indent=2, sort_keys=True, default=str).encode())

    def _paths(self, dataset: str, image_id: str) -> tuple[Path, Path]:
        base = self.directory / dataset / image_id
        return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")

    def get(self, dataset: str, image_id: str) -> Prediction | None:
        """The stored prediction, or None when absent or unreadable."""
        array_path, names_path = self._paths(dataset, image_id)
        try:
            meta = json.loads(names_path.read_text(encoding="utf-8"))
            with np.load(array_path) as arrays:
                label_map = arrays["label_map"].astype(np.int32)
        except (OSError, ValueError, KeyError):
            return None
        self.hits += 1
        return Prediction(label_map, list(meta["names"]), [float(s) for s in meta["scores"]])

    def put(self, dataset: str, image_id: str, prediction: Prediction) -> None:
        array_path, names_path = self._paths(dataset, image_id)
        dtype = np.uint8 if len(prediction.names) <= 256 else np.uint16
        label_map = prediction.label_map.astype(dtype)
        write_atomically(array_path, lambda path: _save_npz(path, label_map))
        meta = {"names": prediction.names, "scores": prediction.scores}
        write_bytes_atomically(names_path, json.dumps(meta).encode())
        self.stored += 1


def _save_npz(path: Path, label_map: np.ndarray) -> None:
    with path.open("wb") as handle:  # a file object: numpy would append ".npz" to a path
        np.savez_compressed(handle, label_map=label_map)
