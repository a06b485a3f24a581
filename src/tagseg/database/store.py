"""The persistent text database: a folder holding a manifest, texts in Parquet and FAISS vectors.

Layout of a database folder::

    manifest.json              format version, text model, dim, template, count, sources,
                               the list of shards with their files' sizes and checksums
    shard-<token>.parquet      id, text, source, hash (64-bit, for de-duplication) per row
    shard-<token>.faiss        the vectors of the same rows, in the same order
    removed-<token>.npy        ids removed but still present in a shard (filtered at search)

Every change writes new files under fresh names, then replaces ``manifest.json`` atomically, then
deletes files the manifest no longer names. A reader therefore always sees one complete state: the
one before the change or the one after it, never a mixture, whatever happens in between.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tagseg.database import index as faiss_index
from tagseg.errors import DatabaseError
from tagseg.files import exclusive_lock, sha256_of, write_atomically, write_bytes_atomically
from tagseg.interfaces import Hit, TextEncoder, UpdateReport

FORMAT_NAME = "tagseg-text-database"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
SMALL_SHARD = 65_536
"""New texts join the last shard while it stays this small; beyond it they start a new shard."""
COMPACT_WHEN_REMOVED = 0.25
"""A shard is rewritten without its removed rows once they exceed this fraction of it..."""
COMPACT_WHEN_REMOVED_ROWS = 4_096
"""... or this many rows (a search asks each shard for ``k`` plus its removed rows)."""
VERIFY_CHECKSUMS_UP_TO = 256 * 2**20
"""Opening verifies every file's checksum when the database is at most this many bytes."""


def text_hash(text: str) -> int:
    """A 64-bit hash of ``text`` identifying exact duplicates."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class Rows:
    """Texts with their sources, hashes and vectors, ready to be stored."""

    texts: list[str]
    sources: list[str]
    hashes: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class _Shard:
    """One stored shard: its manifest entry, texts, ids, hashes and index, loaded."""

    entry: dict
    ids: np.ndarray
    texts: pa.ChunkedArray
    sources: pa.ChunkedArray
    hashes: np.ndarray
    index: faiss.Index
    dead: np.ndarray = field(init=False)
    dead_count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.dead = np.zeros(len(self.ids), dtype=bool)

    @property
    def live(self) -> int:
        return len(self.ids) - self.dead_count


@dataclass(frozen=True)
class DatabaseInfo:
    """A summary of a database for people: what it holds and how it is stored."""

    path: Path
    model_id: str
    dim: int
    template: str
    count: int
    sources: dict[str, int]
    index_kinds: dict[str, int]
    shards: int
    size_bytes: int
    removed_pending: int
    build_complete: bool
    format_version: int = FORMAT_VERSION


class PersistentTextDatabase:
    """A :class:`~tagseg.interfaces.TextDatabase` stored in a folder, updatable in place.

    Open one with :meth:`open` (or :func:`tagseg.database.open_database`), make an empty one with
    :meth:`create`, fill one from files with :func:`tagseg.database.build_database`.
    """

    def __init__(self, path: Path, manifest: dict, shards: list[_Shard], removed: np.ndarray) -> None:
        self.path = path
        self.manifest = manifest
        self.dim = int(manifest["dim"])
        self.model_id = str(manifest["model_id"])
        self.template = str(manifest["template"])
        self._shards = shards
        self._removed = removed
        self._mark_dead()

    # ----------------------------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, model_id: str, dim: int, template: str = "{}") -> "PersistentTextDatabase":
        """Make an empty database at ``path`` (a new or empty folder)."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise DatabaseError(f"Cannot create a database in {path}: the folder is not empty.")
        if "{}" not in template:
            raise DatabaseError(f"The prompt template {template!r} must contain '{{}}' where the text goes.")
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_id": model_id,
            "dim": int(dim),
            "template": template,
            "count": 0,
            "next_id": 0,
            "sources": {},
            "shards": [],
            "removed": None,
            "build": None,
            "updated": _now(),
        }
        write_bytes_atomically(path / MANIFEST, _manifest_bytes(manifest))
        return cls(path, manifest, [], np.zeros(0, dtype=np.int64))

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: TextEncoder | None = None,
        model_id: str | None = None,
        dim: int | None = None,
        verify: bool | None = None,
    ) -> "PersistentTextDatabase":
        """Open the database at ``path``, checking it matches ``encoder`` (or ``model_id``/``dim``).

        ``verify`` checks every file's checksum (default: only for databases up to 256 MiB).
        """
        path = Path(path)
        if encoder is not None:
            model_id, dim = encoder.model_id, encoder.dim
        for attempt in range(2):
            manifest = read_manifest(path)
            check_compatible(path, manifest, model_id=model_id, dim=dim)
            try:
                database = cls._load(path, manifest, verify)
                database._clean_interrupted_writes()
                return database
            except DatabaseError:
                if attempt == 1 or read_manifest(path) == manifest:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load(cls, path: Path, manifest: dict, verify: bool | None) -> "PersistentTextDatabase":
        files = {name: facts for shard in manifest["shards"] for name, facts in shard["files"].items()}
        if manifest["removed"]:
            files[manifest["removed"]["file"]] = manifest["removed"]
        total = 0
        for name in files:
            file = path / name
            if not file.is_file():
                raise DatabaseError(f"Database {path} is damaged: its file {name} is missing.")
            size = file.stat().st_size
            if size != files[name]["bytes"]:
                raise DatabaseError(
                    f"Database {path} is damaged: {name} has {size} bytes, the manifest says {files[name]['bytes']}."
                )
            total += size
        if verify or (verify is None and total <= VERIFY_CHECKSUMS_UP_TO):
            for name in files:
                if sha256_of(path / name) != files[name]["sha256"]:
                    raise DatabaseError(f"Database {path} is damaged: the checksum of {name} does not match.")
        shards = [_load_shard(path, entry, int(manifest["dim"])) for entry in manifest["shards"]]
        removed = np.zeros(0, dtype=np.int64)
        if manifest["removed"]:
            try:
                removed = np.load(path / manifest["removed"]["file"], allow_pickle=False)
            except (ValueError, OSError) as error:
                raise DatabaseError(f"Database {path} is damaged: cannot read its removed ids: {error}") from error
        return cls(path, manifest, shards, removed)

    # ------------------------------------------------------------------------------- inspection
    def __len__(self) -> int:
        return int(self.manifest["count"])

    def __repr__(self) -> str:
        return f"PersistentTextDatabase({str(self.path)!r}, model_id={self.model_id!r}, count={len(self)})"

    def info(self) -> DatabaseInfo:
        """Count, model, sources, index kinds and size on disk."""
        kinds: dict[str, int] = {}
        for shard in self._shards:
            kinds[shard.entry["index"]] = kinds.get(shard.entry["index"], 0) + shard.live
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        build = self.manifest.get("build")
        return DatabaseInfo(
            path=self.path,
            model_id=self.model_id,
            dim=self.dim,
            template=self.template,
            count=len(self),
            sources=dict(self.manifest["sources"]),
            index_kinds=kinds,
            shards=len(self._shards),
            size_bytes=size,
            removed_pending=int(self._removed.size),
            build_complete=build is None or bool(build.get("complete")),
        )

    def texts(self) -> Iterable[str]:
        """Every stored text (removed ones excluded), shard by shard."""
        for shard in self._shards:
            for text, dead in zip(shard.texts.to_pylist(), shard.dead):
                if not dead:
                    yield text

    def contains(self, text: str) -> bool:
        """Whether ``text`` (stripped) is stored."""
        return bool(self._locate_hashes(np.array([text_hash(text.strip())], dtype=np.uint64)))

    # ------------------------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The ``k`` texts most similar to each L2-normalised query row, best first, with vectors."""
        queries = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if queries.shape[1] != self.dim:
            raise DatabaseError(f"Query dimension {queries.shape[1]} does not match the database's {self.dim}.")
        if k < 1:
            raise DatabaseError(f"k must be at least 1, not {k}.")
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for number, shard in enumerate(self._shards):
            if shard.index.ntotal == 0:
                continue
            scores, rows, _ = faiss_index.search_index(shard.index, queries, k + shard.dead_count, with_vectors=False)
            valid = rows >= 0
            if shard.dead_count:
                valid[valid] = ~shard.dead[rows[valid]]
            found.append((np.where(valid, scores, -np.inf), rows, np.full(rows.shape, number)))
        if not found:
            return [[] for _ in range(len(queries))]
        scores, rows, shard_numbers = (np.concatenate(parts, axis=1) for parts in zip(*found))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, rows, shard_numbers = (np.take_along_axis(a, order, axis=1) for a in (scores, rows, shard_numbers))
        # Valid hits sort first; texts, ids and vectors are fetched for them only, one call per shard.
        hit = np.isfinite(scores)
        texts = np.empty(scores.shape, dtype=object)
        ids = np.zeros(scores.shape, dtype=np.int64)
        vectors = np.zeros((*scores.shape, self.dim), dtype=np.float32)
        for number in np.unique(shard_numbers[hit]):
            shard, mine = self._shards[number], hit & (shard_numbers == number)
            shard_rows = rows[mine]
            texts[mine] = [shard.texts[int(row)].as_py() for row in shard_rows]  # faster than a take
            ids[mine] = shard.ids[shard_rows]
            vectors[mine] = faiss_index.vectors_at(shard.index, shard_rows)
        return [
            [Hit(texts[q, c], float(scores[q, c]), int(ids[q, c]), vectors[q, c]) for c in range(int(hit[q].sum()))]
            for q in range(len(queries))
        ]

    def search_texts(self, queries: Sequence[str], encoder: TextEncoder, k: int = 10) -> list[list[Hit]]:
        """Text-to-text search: embed ``queries`` with the database's template and search."""
        self._check_encoder(encoder)
        return self.search(_encode(encoder, [self.template.format(q) for q in queries]), k)

    # ----------------------------------------------------------------------------------- updates
    def add_texts(
        self, texts: Iterable[str], encoder: TextEncoder, *, source: str = "added", batch_size: int = 256
    ) -> UpdateReport:
        """Embed and store ``texts`` (stripped; blank ones and those already stored skipped)."""
        self._check_encoder(encoder)
        with exclusive_lock(self.path / LOCK):
            self._reload_if_changed()
            seen: set[int] = set()
            kept: list[str] = []
            hashes: list[int] = []
            blank = duplicates = 0
            for text in texts:
                text = text.strip() if isinstance(text, str) else ""
                if not text:
                    blank += 1
                    continue
                h = text_hash(text)
                if h in seen:
                    duplicates += 1
                    continue
                seen.add(h)
                kept.append(text)
                hashes.append(h)
            hash_array = np.array(hashes, dtype=np.uint64)
            stored = self.stored_hashes()
            fresh = ~np.isin(hash_array, stored)
            duplicates += int((~fresh).sum())
            kept = [t for t, f in zip(kept, fresh) if f]
            if kept:
                vectors = np.concatenate(
                    [
                        _encode(encoder, [self.template.format(t) for t in kept[i : i + batch_size]])
                        for i in range(0, len(kept), batch_size)
                    ]
                )
                self.append(Rows(kept, [source] * len(kept), hash_array[fresh], vectors))
        return UpdateReport(added=len(kept), duplicates=duplicates, blank=blank)

    def remove(self, texts: Iterable[str] = (), ids: Iterable[int] = ()) -> int:
        """Remove stored texts given by text or by id; returns how many were removed."""
        wanted_hashes = np.array([text_hash(t.strip()) for t in texts], dtype=np.uint64)
        wanted_ids = np.fromiter(ids, dtype=np.int64)
        with exclusive_lock(self.path / LOCK):
            self._reload_if_changed()
            hit_ids = [
                shard.ids[(np.isin(shard.hashes, wanted_hashes) | np.isin(shard.ids, wanted_ids)) & ~shard.dead]
                for shard in self._shards
            ]
            newly_removed = np.concatenate(hit_ids) if hit_ids else np.zeros(0, dtype=np.int64)
            if newly_removed.size == 0:
                return 0
            sources = dict(self.manifest["sources"])
            for shard in self._shards:
                mask = np.isin(shard.ids, newly_removed)
                for name in shard.sources.filter(pa.array(mask)).to_pylist():
                    sources[name] -= 1
                    if sources[name] <= 0:
                        del sources[name]
            removed = np.union1d(self._removed, newly_removed)
            kept_shards: list[_Shard] = []
            for shard in self._shards:
                dead = np.isin(shard.ids, removed)
                if not dead.any() or (dead.mean() <= COMPACT_WHEN_REMOVED and dead.sum() <= COMPACT_WHEN_REMOVED_ROWS):
                    kept_shards.append(shard)
                elif not dead.all():
                    kept_shards.append(self._rewrite_without(shard, dead))
            still_stored = np.concatenate([s.ids for s in kept_shards]) if kept_shards else np.zeros(0, np.int64)
            self._commit(kept_shards, np.intersect1d(removed, still_stored), sources=sources)
        return int(newly_removed.size)

    # ------------------------------------------------------------------- used by build and default
    def stored_hashes(self) -> np.ndarray:
        """Sorted hashes of every stored text (removed ones excluded)."""
        parts = [shard.hashes[~shard.dead] for shard in self._shards]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)

    def append(self, rows: Rows, *, build: dict | None = None) -> None:
        """Store ``rows`` (already de-duplicated and embedded) and commit, with ``build`` progress.

        The caller holds the write lock. Rows join the last shard while it is small and exact.
        """
        if rows.vectors.shape != (len(rows), self.dim):
            raise DatabaseError(f"Expected vectors of shape ({len(rows)}, {self.dim}), got {rows.vectors.shape}.")
        if len(rows) == 0:
            self._commit(self._shards, self._removed, build=build)
            return
        first_id = int(self.manifest["next_id"])
        ids = np.arange(first_id, first_id + len(rows), dtype=np.int64)
        shards = list(self._shards)
        last = shards[-1] if shards else None
        texts, sources, hashes, vectors = rows.texts, rows.sources, rows.hashes, rows.vectors
        if last is not None and last.entry["index"] == "flat" and not last.dead.any() and len(last.ids) + len(rows) <= SMALL_SHARD:
            shards.pop()
            ids = np.concatenate([last.ids, ids])
            texts = last.texts.to_pylist() + texts
            sources = last.sources.to_pylist() + sources
            hashes = np.concatenate([last.hashes, hashes])
            vectors = np.concatenate([faiss_index.all_vectors(last.index), vectors])
        shards.append(self._write_shard(ids, texts, sources, hashes, vectors, "flat"))
        counts = dict(self.manifest["sources"])
        for name in rows.sources:
            counts[name] = counts.get(name, 0) + 1
        self._commit(shards, self._removed, sources=counts, next_id=first_id + len(rows), build=build)

    def reindex(self, kind: str = "auto", *, build: dict | None = None) -> None:
        """Rewrite every shard into one index of ``kind`` (see :data:`~tagseg.database.index.INDEX_KINDS`)."""
        kind = faiss_index.resolve_kind(kind, len(self))
        live = [(shard, ~shard.dead) for shard in self._shards if shard.live]
        if not live:
            self._commit([], np.zeros(0, dtype=np.int64), build=build)
            return
        index = faiss_index.new_index(kind, self.dim, len(self))
        wanted = faiss_index.training_size(kind, len(self))
        if wanted:
            index.train(self._training_sample(live, wanted))
        for shard, keep in live:
            index.add(faiss_index.all_vectors(shard.index)[keep])
        faiss_index.finish_index(index)
        merged = self._write_shard_index(
            np.concatenate([s.ids[keep] for s, keep in live]),
            pa.chunked_array([s.texts.filter(pa.array(keep)) for s, keep in live]).combine_chunks(),
            pa.chunked_array([s.sources.filter(pa.array(keep)) for s, keep in live]).combine_chunks(),
            np.concatenate([s.hashes[keep] for s, keep in live]),
            index,
            kind,
        )
        self._commit([merged], np.zeros(0, dtype=np.int64), build=build)

    @contextlib.contextmanager
    def write_lock(self):  # type: ignore[no-untyped-def]
        """Hold the database's write lock (other writers, in any process, wait)."""
        with exclusive_lock(self.path / LOCK):
            self._reload_if_changed()
            yield

    # --------------------------------------------------------------------------------- internals
    def _check_encoder(self, encoder: TextEncoder) -> None:
        check_compatible(self.path, self.manifest, model_id=encoder.model_id, dim=encoder.dim)

    def _mark_dead(self) -> None:
        for shard in self._shards:
            shard.dead = np.isin(shard.ids, self._removed)
            shard.dead_count = int(shard.dead.sum())

    def _locate_hashes(self, hashes: np.ndarray) -> int:
        return sum(int((np.isin(s.hashes, hashes) & ~s.dead).sum()) for s in self._shards)

    def _reload_if_changed(self) -> None:
        manifest = read_manifest(self.path)
        if manifest != self.manifest:
            fresh = PersistentTextDatabase._load(self.path, manifest, verify=False)
            self.manifest, self._shards, self._removed = fresh.manifest, fresh._shards, fresh._removed

    def _training_sample(self, live: list[tuple[_Shard, np.ndarray]], wanted: int) -> np.ndarray:
        total = sum(int(keep.sum()) for _, keep in live)
        rng = np.random.default_rng(0)
        parts = []
        for shard, keep in live:
            rows = np.flatnonzero(keep)
            take = rng.choice(rows, size=max(1, round(wanted * len(rows) / total)), replace=False) if len(rows) > 1 else rows
            parts.append(shard.index.reconstruct_batch(np.sort(take)))
        return np.ascontiguousarray(np.concatenate(parts)[:wanted])

    def _rewrite_without(self, shard: _Shard, dead: np.ndarray) -> _Shard:
        """The shard without its ``dead`` rows: IVF codes copied as they are, other kinds rebuilt
        (``flat`` below :data:`~tagseg.database.index.APPROXIMATE_FROM` rows)."""
        keep = ~dead
        ids, hashes = shard.ids[keep], shard.hashes[keep]
        texts, sources = (column.filter(pa.array(keep)).combine_chunks() for column in (shard.texts, shard.sources))
        if faiss_index.is_ivf(shard.index):
            index = faiss_index.read_index(self.path / f"{shard.entry['name']}.faiss", mmap=False)
            faiss_index.drop_rows(index, np.flatnonzero(dead))
            return self._write_shard_index(ids, texts, sources, hashes, index, shard.entry["index"])
        kind = shard.entry["index"] if keep.sum() >= faiss_index.APPROXIMATE_FROM else "flat"
        vectors = faiss_index.all_vectors(shard.index)[keep]
        return self._write_shard(ids, texts.to_pylist(), sources.to_pylist(), hashes, vectors, kind)

    def _write_shard(
        self, ids: np.ndarray, texts: list[str], sources: list[str], hashes: np.ndarray, vectors: np.ndarray, kind: str
    ) -> _Shard:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss_index.new_index(kind, self.dim, len(vectors))
        wanted = faiss_index.training_size(kind, len(vectors))
        if wanted:
            index.train(vectors[np.random.default_rng(0).choice(len(vectors), size=wanted, replace=False)])
        index.add(vectors)
        faiss_index.finish_index(index)
        return self._write_shard_index(ids, pa.array(texts, pa.string()), pa.array(sources, pa.string()), hashes, index, kind)

    def _write_shard_index(
        self, ids: np.ndarray, texts: pa.Array, sources: pa.Array, hashes: np.ndarray, index: faiss.Index, kind: str
    ) -> _Shard:
        name = f"shard-{uuid.uuid4().hex[:16]}"
        table = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "text": texts,
                "source": pc.dictionary_encode(sources),
                "hash": pa.array(hashes, pa.uint64()),
            }
        )
        texts_file, vectors_file = f"{name}.parquet", f"{name}.faiss"
        write_atomically(self.path / texts_file, lambda p: pq.write_table(table, p, compression="zstd"))
        write_atomically(self.path / vectors_file, lambda p: faiss.write_index(index, str(p)))
        entry = {
            "name": name,
            "index": kind,
            "rows": int(len(ids)),
            "files": {f: {"bytes": (self.path / f).stat().st_size, "sha256": sha256_of(self.path / f)} for f in (texts_file, vectors_file)},
        }
        return _Shard(entry, np.asarray(ids, np.int64), table.column("text"), table.column("source").cast(pa.string()), np.asarray(hashes, np.uint64), index)

    def _commit(
        self,
        shards: list[_Shard],
        removed: np.ndarray,
        *,
        sources: dict[str, int] | None = None,
        next_id: int | None = None,
        build: dict | None = None,
    ) -> None:
        manifest = dict(self.manifest)
        if removed.size:
            name = f"removed-{uuid.uuid4().hex[:16]}.npy"
            write_atomically(self.path / name, lambda p: _save_npy(p, removed.astype(np.int64)))
            manifest["removed"] = {"file": name, "bytes": (self.path / name).stat().st_size, "sha256": sha256_of(self.path / name), "count": int(removed.size)}
        else:
            manifest["removed"] = None
        manifest["shards"] = [s.entry for s in shards]
        manifest["count"] = int(sum(len(s.ids) for s in shards) - removed.size)
        if sources is not None:
            manifest["sources"] = {k: v for k, v in sorted(sources.items()) if v > 0}
        if next_id is not None:
            manifest["next_id"] = next_id
        if build is not None:
            manifest["build"] = build
        manifest["updated"] = _now()
        write_bytes_atomically(self.path / MANIFEST, _manifest_bytes(manifest))
        self.manifest, self._shards, self._removed = manifest, shards, np.asarray(removed, np.int64)
        self._mark_dead()
        self._delete_unreferenced()

    def _delete_unreferenced(self) -> None:
        for file in self._unreferenced_files():
            file.unlink(missing_ok=True)

    def _unreferenced_files(self) -> list[Path]:
        """Shard, removed-id and temporary files the manifest does not name: left by an interrupted write."""
        keep = {MANIFEST, LOCK} | {n for s in self.manifest["shards"] for n in s["files"]}
        if self.manifest["removed"]:
            keep.add(self.manifest["removed"]["file"])
        return [
            file
            for file in self.path.iterdir()
            if file.is_file() and file.name not in keep and (file.name.startswith(("shard-", "removed-")) or file.name.endswith(".tmp"))
        ]

    def _clean_interrupted_writes(self) -> None:
        """Delete what an interrupted write left, unless a writer holds the lock now (its files are not leftovers)."""
        if not self._unreferenced_files():
            return
        try:
            with exclusive_lock(self.path / LOCK, wait=False) as locked:
                if locked and read_manifest(self.path) == self.manifest:
                    self._delete_unreferenced()
        except OSError:  # a read-only folder: leave the files, reading is unaffected
            pass


def read_manifest(path: Path) -> dict:
    """The manifest of the database at ``path``, checked for format and version."""
    file = path / MANIFEST
    if not path.is_dir():
        raise DatabaseError(f"No database at {path}: the folder does not exist.")
    if not file.is_file():
        raise DatabaseError(f"No database at {path}: it has no {MANIFEST}.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatabaseError(f"Database {path} is damaged: {MANIFEST} is not valid JSON ({error}).") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DatabaseError(f"{path / MANIFEST} is not a tagseg text database manifest.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatabaseError(
            f"Database {path} has format version {manifest.get('format_version')}; "
            f"this tagseg reads version {FORMAT_VERSION}."
        )
    return manifest


def check_compatible(path: Path, manifest: dict, *, model_id: str | None, dim: int | None) -> None:
    """Fail with both names when the database's text model or dimension is not the expected one."""
    if (model_id is not None and model_id != manifest["model_id"]) or (dim is not None and dim != manifest["dim"]):
        raise DatabaseError(
            f"Database {path} was built with text model {manifest['model_id']!r} (dim {manifest['dim']}), "
            f"but the text model in use is {model_id or manifest['model_id']!r} (dim {dim or manifest['dim']}). "
            "Rebuild the database with this model, or use the model it was built with."
        )


def _load_shard(path: Path, entry: dict, dim: int) -> _Shard:
    texts_file = path / f"{entry['name']}.parquet"
    try:
        table = pq.read_table(texts_file, memory_map=True)
    except (pa.ArrowException, OSError) as error:
        raise DatabaseError(f"Database {path} is damaged: cannot read {texts_file.name}: {error}") from error
    missing = {"id", "text", "source", "hash"} - set(table.column_names)
    if missing:
        raise DatabaseError(f"Database {path} is damaged: {texts_file.name} lacks columns {sorted(missing)}.")
    index = faiss_index.read_index(path / f"{entry['name']}.faiss")
    if index.d != dim or index.ntotal != table.num_rows:
        raise DatabaseError(
            f"Database {path} is damaged: {entry['name']} has {table.num_rows} texts but "
            f"{index.ntotal} vectors of dim {index.d} (expected dim {dim})."
        )
    return _Shard(
        entry,
        table.column("id").to_numpy(),
        table.column("text"),
        table.column("source").cast(pa.string()),
        table.column("hash").to_numpy(),
        index,
    )


def _encode(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    vectors = encoder.encode(texts)
    array = vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else np.asarray(vectors)
    return np.ascontiguousarray(array, dtype=np.float32)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
