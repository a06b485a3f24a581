"""Building a persistent database from files: streamed, checkpointed, resumable."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tagseg.database import index as faiss_index
from tagseg.database.sources import Record, TextSource, open_source
from tagseg.database.store import MANIFEST, PersistentTextDatabase, Rows, _encode, read_manifest, text_hash
from tagseg.errors import DatabaseError
from tagseg.interfaces import TextEncoder
from tagseg.progress import ProgressListener, listener_for

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


@dataclass
class BuildState:
    """A build as its database's manifest records it (``build``): every input's fingerprint with
    ``rows_done`` and ``done``, whether the build is complete, and the records skipped so far."""

    inputs: list[dict[str, Any]]
    complete: bool = False
    duplicates: int = 0
    blank: int = 0
    unreadable: int = 0

    def record(self) -> dict[str, Any]:
        """The manifest's ``build`` entry."""
        return asdict(self)


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
    progress: bool | ProgressListener = True,
) -> BuildReport:
    """Embed the texts of ``inputs`` with ``encoder`` into a new database folder at ``path``.

    Texts are read in order, stripped, exact duplicates and blank or unreadable records skipped and
    counted. Every ``checkpoint_rows`` embedded texts are committed: an interrupted build leaves a
    loadable database with everything committed so far, and ``resume=True`` carries on where it
    stopped. With ``overwrite=True`` an existing database is replaced only once the new one is
    complete. ``index`` is one of :data:`tagseg.database.index.INDEX_KINDS`. ``progress`` reports the
    texts embedded per input (:func:`tagseg.progress.listener_for`).
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
    state = BuildState(**database.manifest["build"])
    try:
        with database.write_lock():
            filler = _Filler(database, encoder, state, batch_size, checkpoint_rows, listener_for(progress))
            for number, source in enumerate(sources):
                if not state.inputs[number]["done"]:
                    filler.fill(number, source)
            if len(database) == 0:
                raise DatabaseError(
                    f"No texts to store in {', '.join(str(s.path) for s in sources)}: "
                    f"{state.blank} blank and {state.unreadable} unreadable records."
                )
            kind = faiss_index.resolve_kind(index, len(database))
            state = replace(state, complete=True)
            if kind != "flat" or len(database.manifest["shards"]) > 1:
                database.reindex(kind, build=state.record())
            else:
                database.append(_no_rows(database.dim), build=state.record())
    except DatabaseError:
        if len(database) == 0:
            shutil.rmtree(target, ignore_errors=True)
        raise
    if target != path:
        _swap_in(target, path)
    return BuildReport(path, len(database), state.duplicates, state.blank, state.unreadable, kind)


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
    state = BuildState([{**f, "rows_done": 0, "done": False} for f in fingerprints])
    with database.write_lock():
        database.append(_no_rows(encoder.dim), build=state.record())
    return database


def _no_rows(dim: int) -> Rows:
    return Rows([], [], np.zeros(0, np.uint64), np.zeros((0, dim), np.float32))


@dataclass
class _Pending:
    """Texts of one input since the last commit: a batch waiting for the encoder, the embedded ones,
    their hashes, and the records skipped."""

    batch: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    blank: int = 0
    unreadable: int = 0


class _Filler:
    """Streams inputs into a database under construction, committing every ``checkpoint_rows``
    embedded texts together with the :class:`BuildState` that lets a build resume there."""

    def __init__(
        self,
        database: PersistentTextDatabase,
        encoder: TextEncoder,
        state: BuildState,
        batch_size: int,
        checkpoint_rows: int,
        listener: ProgressListener,
    ) -> None:
        self.database, self.encoder, self.state = database, encoder, state
        self.batch_size, self.checkpoint_rows, self.listener = batch_size, checkpoint_rows, listener
        self.stored = database.stored_hashes()  # sorted hashes of the texts committed so far

    def fill(self, number: int, source: TextSource) -> None:
        """Stream input ``number`` from where the state says it stopped to its end."""
        self.listener.begin(f"Embedding {source.path.name}", None)
        progress = _TextProgress(self.listener, source.progress_total)
        rows_done = self.state.inputs[number]["rows_done"]
        pending = _Pending()
        for record in source.records(skip=rows_done):
            rows_done += 1
            self._take(record, pending)
            if len(pending.batch) == self.batch_size:
                self._embed_batch(pending, progress, record.progress)
                if len(pending.texts) >= self.checkpoint_rows:
                    self._commit(number, source, rows_done, pending, finished=False)
                    pending = _Pending()
        self._embed_batch(pending, progress, progress.input_total)
        self._commit(number, source, rows_done, pending, finished=True)
        progress.finish()

    def _take(self, record: Record, pending: _Pending) -> None:
        """Queue a record's text, or count it as unreadable, blank or a duplicate."""
        if record.text is None:
            pending.unreadable += 1
            return
        text = record.text.strip()
        if not text:
            pending.blank += 1
            return
        h = text_hash(text)
        if h in pending.seen or _sorted_contains(self.stored, h):
            pending.duplicates += 1
            return
        pending.seen.add(h)
        pending.hashes.append(h)
        pending.batch.append(text)

    def _embed_batch(self, pending: _Pending, progress: _TextProgress, input_position: int) -> None:
        if pending.batch:
            pending.vectors.append(_embed(self.database, self.encoder, pending.batch))
            progress.embedded(len(pending.batch), input_position)
            pending.texts.extend(pending.batch)
            pending.batch = []

    def _commit(self, number: int, source: TextSource, rows_done: int, pending: _Pending, finished: bool) -> None:
        state = self.state
        state.duplicates += pending.duplicates
        state.blank += pending.blank
        state.unreadable += pending.unreadable
        state.inputs[number] = {**state.inputs[number], "rows_done": rows_done, "done": finished}
        hashes = np.array(pending.hashes, dtype=np.uint64)
        vectors = np.concatenate(pending.vectors) if pending.vectors else np.zeros((0, self.database.dim), np.float32)
        rows = Rows(pending.texts, [source.path.name] * len(pending.texts), hashes, vectors)
        self.database.append(rows, build=state.record())
        self.stored = np.union1d(self.stored, hashes)


class _TextProgress:
    """Progress in embedded texts: the total is estimated from how far the reader is in its input."""

    def __init__(self, listener: ProgressListener, input_total: int) -> None:
        self.listener, self.input_total = listener, max(1, input_total)
        self.done = 0

    def embedded(self, count: int, input_position: int) -> None:
        self.done += count
        fraction = min(1.0, input_position / self.input_total)
        estimate = max(self.done, round(self.done / fraction)) if fraction > 0 else None
        self.listener.update(self.done, estimate)

    def finish(self) -> None:
        self.listener.update(self.done, self.done)


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
