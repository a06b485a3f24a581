"""Building a persistent database from files: streamed, checkpointed, resumable."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tagseg.database import index as faiss_index
from tagseg.database.sources import TextSource, open_source
from tagseg.database.store import MANIFEST, PersistentTextDatabase, Rows, _encode, read_manifest, text_hash
from tagseg.errors import DatabaseError
from tagseg.interfaces import TextEncoder

CHECKPOINT_ROWS = 16_384
"""Embedded texts are committed to disk at least this often, so an interruption loses at most these."""


@dataclass(frozen=True)
class BuildReport:
    """What a build stored and what it skipped, over all its runs (a resumed build included)."""

    path: Path
    stored: int
    duplicates: int
    blank: int
    unreadable: int
    index: str


def build_database(
    path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str] | TextSource],
    encoder: TextEncoder,
    *,
    column: str | None = None,
    template: str = "{}",
    index: str = "auto",
    batch_size: int = 256,
    checkpoint_rows: int = CHECKPOINT_ROWS,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Embed the texts of ``inputs`` with ``encoder`` into a new database folder at ``path``.

    Texts are read in order, stripped, exact duplicates and blank or unreadable records skipped and
    counted. Every ``checkpoint_rows`` embedded texts are committed: an interrupted build leaves a
    loadable database with everything committed so far, and ``resume=True`` carries on where it
    stopped. With ``overwrite=True`` an existing database is replaced only once the new one is
    complete. ``index`` is one of :data:`tagseg.database.index.INDEX_KINDS`.
    """
    path = Path(path)
    faiss_index.resolve_kind(index, 0)
    sources = [s if isinstance(s, TextSource) else open_source(s, column=column) for s in inputs]
    if not sources:
        raise DatabaseError("Give at least one input file to build a database from.")
    target = path
    if overwrite and (path / MANIFEST).is_file():
        target = path.with_name(f".{path.name}.rebuild")
        if not resume:
            shutil.rmtree(target, ignore_errors=True)
    database = _open_target(target, sources, encoder, template, resume)
    state = database.manifest["build"]
    try:
        with database.write_lock():
            _fill(database, sources, state, encoder, batch_size, checkpoint_rows, progress)
            if len(database) == 0:
                raise DatabaseError(
                    f"No texts to store in {', '.join(str(s.path) for s in sources)}: "
                    f"{state['blank']} blank and {state['unreadable']} unreadable records."
                )
            kind = faiss_index.resolve_kind(index, len(database))
            state = {**state, "complete": True}
            if kind != "flat" or len(database.manifest["shards"]) > 1:
                database.reindex(kind, build=state)
            else:
                database.append(Rows([], [], np.zeros(0, np.uint64), np.zeros((0, database.dim), np.float32)), build=state)
    except DatabaseError:
        if len(database) == 0:
            shutil.rmtree(target, ignore_errors=True)
        raise
    if target != path:
        _swap_in(target, path)
    return BuildReport(path, len(database), state["duplicates"], state["blank"], state["unreadable"], kind)


def _open_target(
    target: Path, sources: list[TextSource], encoder: TextEncoder, template: str, resume: bool
) -> PersistentTextDatabase:
    fingerprints = [{**s.fingerprint(), "format": s.format, "column": s.column} for s in sources]
    if (target / MANIFEST).is_file():
        manifest = read_manifest(target)
        build = manifest.get("build")
        if not resume:
            raise DatabaseError(
                f"A database already exists at {target}. Add to it with `tagseg db add`, "
                "replace it with --overwrite, or finish an interrupted build with --resume."
            )
        if build is None or build.get("complete"):
            raise DatabaseError(f"The database at {target} is complete: there is no interrupted build to resume.")
        recorded = [{k: v for k, v in item.items() if k not in ("rows_done", "done")} for item in build["inputs"]]
        if recorded != fingerprints:
            raise DatabaseError(
                f"The inputs differ from those of the interrupted build at {target} (paths, sizes or "
                "modification times changed): rebuild with --overwrite."
            )
        database = PersistentTextDatabase.open(target, encoder=encoder)
        if database.template != template:
            raise DatabaseError(f"The interrupted build used the template {database.template!r}, not {template!r}.")
        return database
    database = PersistentTextDatabase.create(target, model_id=encoder.model_id, dim=encoder.dim, template=template)
    state = {
        "inputs": [{**f, "rows_done": 0, "done": False} for f in fingerprints],
        "complete": False,
        "duplicates": 0,
        "blank": 0,
        "unreadable": 0,
    }
    with database.write_lock():
        database.append(Rows([], [], np.zeros(0, np.uint64), np.zeros((0, encoder.dim), np.float32)), build=state)
    return database


def _fill(
    database: PersistentTextDatabase,
    sources: list[TextSource],
    state: dict,
    encoder: TextEncoder,
    batch_size: int,
    checkpoint_rows: int,
    show_progress: bool,
) -> None:
    """Stream every unfinished input into ``database``, committing at checkpoints (updates ``state``)."""
    stored = database.stored_hashes()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("texts"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        for number, source in enumerate(sources):
            item = state["inputs"][number]
            if item["done"]:
                continue
            task = bar.add_task(f"Embedding {source.path.name}", total=None)
            progress = _TextProgress(bar, task, source.progress_total)
            pending_texts: list[str] = []
            pending_hashes: list[int] = []
            pending_seen: set[int] = set()
            embedded: list[np.ndarray] = []
            committed_texts: list[str] = []
            rows_done = item["rows_done"]
            read = 0
            counts = {"duplicates": 0, "blank": 0, "unreadable": 0}

            def commit(finished: bool) -> None:
                nonlocal stored, committed_texts, embedded, pending_seen, pending_hashes, counts
                if pending_texts:
                    embedded.append(_embed(database, encoder, pending_texts))
                    progress.embedded(len(pending_texts), read)
                    committed_texts.extend(pending_texts)
                    pending_texts.clear()
                for key, value in counts.items():
                    state[key] += value
                state["inputs"][number] = {**item, "rows_done": rows_done, "done": finished}
                hashes = np.array(pending_hashes, dtype=np.uint64)
                vectors = np.concatenate(embedded) if embedded else np.zeros((0, database.dim), np.float32)
                database.append(Rows(committed_texts, [source.path.name] * len(committed_texts), hashes, vectors), build=state)
                stored = np.union1d(stored, hashes)
                committed_texts, embedded, pending_hashes = [], [], []
                pending_seen = set()
                counts = {"duplicates": 0, "blank": 0, "unreadable": 0}

            for record in source.records(skip=rows_done):
                rows_done += 1
                read = record.progress
                if record.text is None:
                    counts["unreadable"] += 1
                    continue
                text = record.text.strip()
                if not text:
                    counts["blank"] += 1
                    continue
                h = text_hash(text)
                if h in pending_seen or _sorted_contains(stored, h):
                    counts["duplicates"] += 1
                    continue
                pending_seen.add(h)
                pending_hashes.append(h)
                pending_texts.append(text)
                if len(pending_texts) == batch_size:
                    embedded.append(_embed(database, encoder, pending_texts))
                    progress.embedded(len(pending_texts), read)
                    committed_texts.extend(pending_texts)
                    pending_texts.clear()
                    if len(committed_texts) >= checkpoint_rows:
                        commit(finished=False)
            commit(finished=True)
            progress.finish()


class _TextProgress:
    """A progress bar in embedded texts: the total is estimated from how far the reader is in its input."""

    def __init__(self, bar: Progress, task: TaskID, input_total: int) -> None:
        self.bar, self.task, self.input_total = bar, task, max(1, input_total)
        self.done = 0

    def embedded(self, count: int, input_position: int) -> None:
        self.done += count
        fraction = min(1.0, input_position / self.input_total)
        estimate = max(self.done, round(self.done / fraction)) if fraction > 0 else None
        self.bar.update(self.task, completed=self.done, total=estimate)

    def finish(self) -> None:
        self.bar.update(self.task, completed=self.done, total=self.done)


def _embed(database: PersistentTextDatabase, encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    return _encode(encoder, [database.template.format(t) for t in texts])


def _sorted_contains(sorted_hashes: np.ndarray, value: int) -> bool:
    position = int(np.searchsorted(sorted_hashes, np.uint64(value)))
    return position < len(sorted_hashes) and int(sorted_hashes[position]) == value


def _swap_in(built: Path, path: Path) -> None:
    """Replace the database at ``path`` by the one at ``built`` with two renames."""
    retired = path.with_name(f".{path.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    os.rename(path, retired)
    os.rename(built, path)
    shutil.rmtree(retired, ignore_errors=True)
