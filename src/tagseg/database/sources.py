"""Reading texts to store from files: one text a line, CSV/TSV, JSONL and Parquet, streamed.

Each reader yields one :class:`Record` per input record (line or row) so that a build can count
what it consumed and resume after it. A record whose bytes are not UTF-8, whose JSON is broken or
whose value is missing carries ``text=None``: it is skipped and counted, never fatal.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tagseg.errors import DatabaseError

FORMATS = ("txt", "csv", "tsv", "jsonl", "parquet")
DEFAULT_COLUMNS = ("text", "caption", "name", "label")


@dataclass(frozen=True)
class Record:
    """One input record: its text (``None`` when unreadable) and the reader's progress so far."""

    text: str | None
    progress: int


@dataclass(frozen=True)
class TextSource:
    """A file of texts, its format and the column holding the text (for tabular formats)."""

    path: Path
    format: str
    column: str | None = None

    @property
    def progress_total(self) -> int:
        """The value ``Record.progress`` reaches at the end: rows for Parquet, bytes otherwise."""
        if self.format == "parquet":
            return _parquet_file(self.path).metadata.num_rows
        return self.path.stat().st_size

    def fingerprint(self) -> dict[str, object]:
        """What identifies this input when resuming: absolute path, size and modification time."""
        stat = self.path.stat()
        return {"path": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def records(self, skip: int = 0) -> Iterator[Record]:
        """Every record in order, after the first ``skip`` records."""
        readers = {"txt": _txt_records, "csv": _csv_records, "tsv": _csv_records, "jsonl": _jsonl_records}
        if self.format == "parquet":
            iterator = _parquet_records(self.path, self.column or "")
        else:
            iterator = readers[self.format](self)
        for index, record in enumerate(iterator):
            if index >= skip:
                yield record


def open_source(path: str | os.PathLike[str], *, column: str | None = None, format: str | None = None) -> TextSource:
    """Check ``path`` and pick its format (from the suffix unless given) and text column."""
    path = Path(path)
    if not path.is_file():
        raise DatabaseError(f"Input file {path} does not exist.")
    if path.stat().st_size == 0:
        raise DatabaseError(f"Input file {path} is empty.")
    format = format or _format_from_suffix(path)
    if format not in FORMATS:
        raise DatabaseError(f"Unknown input format {format!r} for {path}; choose one of {', '.join(FORMATS)}.")
    if format == "txt":
        return TextSource(path, format)
    columns = _columns(path, format)
    if column is None:
        column = next((c for c in DEFAULT_COLUMNS if c in columns), columns[0] if len(columns) == 1 else None)
        if column is None:
            raise DatabaseError(
                f"{path} has several columns ({', '.join(columns)}) and none is named "
                f"{' or '.join(DEFAULT_COLUMNS)}: choose one with --column."
            )
    elif column not in columns:
        raise DatabaseError(f"{path} has no column {column!r}; its columns are: {', '.join(columns) or 'none'}.")
    return TextSource(path, format, column)


def _format_from_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1].lstrip(".") if suffixes else "txt"
    return {"text": "txt", "ndjson": "jsonl", "json": "jsonl", "pq": "parquet"}.get(suffix, suffix)


def _open_binary(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when compressed, after any UTF-8 byte-order mark (Excel, Notepad)."""
    raw = path.open("rb")
    handle: BinaryIO = _GzipWithRawPosition(raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
    if handle.peek(3)[:3] == b"\xef\xbb\xbf":  # type: ignore[attr-defined]
        handle.read(3)
    return handle


class _GzipWithRawPosition(gzip.GzipFile):
    """A gzip reader whose ``tell()`` is the position in the compressed file (for progress)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        super().close()
        self._raw.close()


def _decode(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _txt_records(source: TextSource) -> Iterator[Record]:
    with _open_binary(source.path) as handle:
        for line in handle:
            yield Record(_decode(line), handle.tell())


def _csv_records(source: TextSource) -> Iterator[Record]:
    delimiter = "\t" if source.format == "tsv" else ","
    with _open_binary(source.path) as handle:
        lines = (line.decode("utf-8", errors="surrogateescape") for line in handle)
        reader = csv.DictReader(lines, delimiter=delimiter)
        for row in reader:
            value = row.get(source.column or "")
            if value is not None and _has_surrogates(value):
                value = None
            yield Record(value, handle.tell())


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _jsonl_records(source: TextSource) -> Iterator[Record]:
    with _open_binary(source.path) as handle:
        for line in handle:
            text = _decode(line)
            value = None
            if text is not None and text.strip():
                try:
                    item = json.loads(text)
                except json.JSONDecodeError:
                    item = None
                value = item.get(source.column) if isinstance(item, dict) else None
                value = value if isinstance(value, str) else None
            elif text is not None:
                value = ""
            yield Record(value, handle.tell())


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, memory_map=True)
    except (pa.ArrowException, OSError) as error:
        raise DatabaseError(f"{path} is not a readable Parquet file: {error}") from error


def _parquet_records(path: Path, column: str) -> Iterator[Record]:
    rows = 0
    for batch in _parquet_file(path).iter_batches(batch_size=8192, columns=[column]):
        values = batch.column(0)
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            raise DatabaseError(f"Column {column!r} of {path} holds {values.type}, not text.")
        for value in values.to_pylist():
            rows += 1
            yield Record(value, rows)


def _columns(path: Path, format: str) -> list[str]:
    if format == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    with _open_binary(path) as handle:
        if format == "jsonl":
            for line in handle:
                text = _decode(line)
                if text and text.strip():
                    try:
                        item = json.loads(text)
                    except json.JSONDecodeError as error:
                        raise DatabaseError(f"The first record of {path} is not JSON: {error}") from error
                    if not isinstance(item, dict):
                        raise DatabaseError(f"The records of {path} must be JSON objects.")
                    return list(item)
            raise DatabaseError(f"Input file {path} has no records.")
        header = _decode(handle.readline())
        if header is None:
            raise DatabaseError(f"The header line of {path} is not UTF-8.")
        delimiter = "\t" if format == "tsv" else ","
        return next(csv.reader(io.StringIO(header), delimiter=delimiter), [])
