"""Databases in the clip-retrieval layout (as TAG and CaSED release them), opened in place, read-only.

Layout: a folder with a FAISS ``text.index`` and a ``metadata/`` folder of Arrow IPC (``.arrow``)
or Parquet files whose rows, in file-name order, are the index's rows; one column (``caption`` by
default) holds the texts. Nothing is copied: the index and Arrow files are memory-mapped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tagseg.database import index as faiss_index
from tagseg.errors import DatabaseError
from tagseg.interfaces import Hit

INDEX_FILE = "text.index"
METADATA_FOLDER = "metadata"
CLIP_VIT_L14 = "openai/clip-vit-large-patch14"


def is_clip_retrieval_folder(path: Path) -> bool:
    """Whether ``path`` looks like a clip-retrieval index folder."""
    return (path / INDEX_FILE).is_file()


class ClipRetrievalDatabase:
    """A read-only :class:`~tagseg.interfaces.TextDatabase` over a clip-retrieval folder.

    The layout records no model: ``model_id`` names the model its vectors came from (the TAG and
    CaSED releases use CLIP ViT-L/14); ``dim``, when given, is checked against the index.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model_id: str = CLIP_VIT_L14,
        dim: int | None = None,
        column: str = "caption",
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatabaseError(f"No database at {self.path}: the folder does not exist.")
        self.index = faiss_index.read_index(self.path / INDEX_FILE, mmap=True)
        self.dim = faiss_index.index_dim(self.index)
        self.model_id = model_id
        if dim is not None and dim != self.dim:
            raise DatabaseError(
                f"The index {self.path / INDEX_FILE} holds {self.dim}-d vectors, but the text model "
                f"{model_id!r} gives {dim}-d ones: it was built with another model."
            )
        self.captions = _read_captions(self.path / METADATA_FOLDER, column)
        if len(self.captions) != self.index.ntotal:
            raise DatabaseError(
                f"Database {self.path} is damaged: {self.index.ntotal} vectors but {len(self.captions)} "
                f"rows of metadata."
            )
        self.reconstructs = faiss_index.can_reconstruct(self.index)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"ClipRetrievalDatabase({str(self.path)!r}, model_id={self.model_id!r}, count={len(self)})"

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The ``k`` captions most similar to each L2-normalised query row, best first.

        Hits carry vectors when the index can reconstruct them (flat, HNSW, IVF with a direct map).
        """
        queries = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if queries.shape[1] != self.dim:
            raise DatabaseError(f"Query dimension {queries.shape[1]} does not match the database's {self.dim}.")
        scores, rows, vectors = faiss_index.search_index(self.index, queries, k, with_vectors=self.reconstructs)
        results = []
        for q in range(len(queries)):
            results.append(
                [
                    Hit(
                        _as_text(self.captions[int(row)].as_py()),
                        float(score),
                        int(row),
                        None if vectors is None else vectors[q, column],
                    )
                    for column, (row, score) in enumerate(zip(rows[q], scores[q]))
                    if row >= 0
                ]
            )
        return results


def _read_captions(folder: Path, column: str) -> pa.ChunkedArray:
    if not folder.is_dir():
        raise DatabaseError(f"The metadata folder {folder} is missing.")
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
    if not files:
        raise DatabaseError(f"The metadata folder {folder} holds no files.")
    chunks = []
    for file in files:
        table = _read_table(file, column)
        if column not in table.column_names:
            raise DatabaseError(
                f"{file} has no column {column!r}; its columns are: {', '.join(table.column_names)}."
            )
        chunks.extend(table.column(column).chunks)
    return pa.chunked_array(chunks) if chunks else pa.chunked_array([], pa.string())


def _read_table(file: Path, column: str) -> pa.Table:
    try:
        if file.suffix == ".parquet":
            schema = pq.read_schema(file)
            columns = [column] if column in schema.names else None
            return pq.read_table(file, columns=columns, memory_map=True)
        source = pa.memory_map(str(file), "r")
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowException, OSError) as error:
        raise DatabaseError(f"The metadata file {file} is corrupt or not Arrow/Parquet: {error}") from error


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)
