"""Segment embeddings: ``embeddings/NAME.npy``, (S, dim) float32, row i = segment i's embedding."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np

from tagseg.errors import ConfigError
from tagseg.exports.categories import CategoryTable
from tagseg.files import write_bytes_atomically
from tagseg.result import Segmentation

__all__ = ["EmbeddingsWriter"]


class EmbeddingsWriter:
    """Needs results straight from the pipeline: per-image JSON files store no embeddings."""

    def __init__(self, out_dir: str | Path, categories: CategoryTable) -> None:
        self.folder = Path(out_dir) / "embeddings"

    def add(self, name: str, result: Segmentation, image_path: str | Path = "") -> list[Path]:
        if any(s.embedding is None for s in result.segments):
            raise ConfigError(
                "The result has no segment embeddings (per-image JSON files do not store them); "
                "export embeddings while segmenting: tagseg segment ... --export embeddings."
            )
        rows = np.stack([s.embedding for s in result.segments]).astype(np.float32) if result.segments else np.zeros((0, 0), np.float32)
        buffer = BytesIO()
        np.save(buffer, rows)
        path = self.folder / f"{name}.npy"
        write_bytes_atomically(path, buffer.getvalue())
        return [path]

    def finish(self) -> list[Path]:
        return []
