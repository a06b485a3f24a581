"""Product-quantised indexes: built, read back memory-mapped, updated; clip-retrieval IVF-PQ folders."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from database_support import HashingEncoder

from tagseg.database import PersistentTextDatabase, open_database
from tagseg.database import index as faiss_index
from tagseg.database.clip_retrieval import ClipRetrievalDatabase
from tagseg.database.store import Rows, text_hash

DIM = 64
COUNT = 6_000


def clustered(count: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 fixed centres (the centres do not depend on ``seed``)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((50, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, count)] + rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ivfpq_database(path: Path, vectors: np.ndarray) -> PersistentTextDatabase:
    """A database of ``vectors`` (texts ``text <row>``) appended in two shards, then reindexed as ``ivfpq``."""
    database = PersistentTextDatabase.create(path, model_id="synthetic", dim=DIM)
    texts = [f"text {i}" for i in range(len(vectors))]
    with database.write_lock():
        for part in (slice(0, len(vectors) // 2), slice(len(vectors) // 2, None)):
            hashes = np.array([text_hash(t) for t in texts[part]], dtype=np.uint64)
            database.append(Rows(texts[part], ["synthetic"] * len(hashes), hashes, vectors[part]))
        database.reindex("ivfpq")
    return PersistentTextDatabase.open(path)


def test_auto_picks_product_quantisation_for_large_databases() -> None:
    assert faiss_index.resolve_kind("auto", faiss_index.APPROXIMATE_FROM - 1) == "flat"
    assert faiss_index.resolve_kind("auto", faiss_index.COMPRESS_FROM - 1) == "ivf"
    assert faiss_index.resolve_kind("auto", faiss_index.COMPRESS_FROM) == "ivfpq"
    assert faiss_index.pq_bytes(768) == 96 and faiss_index.pq_bytes(64) == 8 and faiss_index.pq_bytes(100) == 10


def test_an_ivfpq_database_is_compact_memory_mapped_and_finds_neighbours(tmp_path: Path) -> None:
    vectors = clustered(COUNT, 1)
    database = ivfpq_database(tmp_path / "db", vectors)
    assert database.info().index_kinds == {"ivfpq": COUNT} and database.info().shards == 1
    (vectors_file,) = (tmp_path / "db").glob("*.faiss")
    assert vectors_file.stat().st_size < COUNT * (faiss_index.pq_bytes(DIM) + 32) + 2**20  # codes, ids, direct map, centroids
    read_back = faiss.read_index(str(vectors_file))
    assert isinstance(read_back, faiss.IndexIVFPQ) and read_back.ntotal == COUNT
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(database._shards[0].index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)  # opened memory-mapped
    hits = database.search(vectors[:200], 10)
    assert np.mean([found[0].id == row for row, found in enumerate(hits)]) > 0.9  # each stored vector finds itself
    assert all(hit.text == f"text {hit.id}" for found in hits for hit in found)
    assert np.mean([float(found[0].vector @ vectors[found[0].id]) for found in hits]) > 0.8  # vectors come back approximately


def test_removing_from_an_ivfpq_shard_keeps_its_codes_and_rows_in_step(tmp_path: Path) -> None:
    vectors = clustered(COUNT, 1)
    database = ivfpq_database(tmp_path / "db", vectors)
    decoded = faiss_index.all_vectors(database._shards[0].index)
    gone = np.arange(0, COUNT, 3)  # a third: over the compaction threshold
    assert database.remove(ids=gone.tolist()) == len(gone)
    reopened = PersistentTextDatabase.open(tmp_path / "db", verify=True)
    assert reopened.info().index_kinds == {"ivfpq": COUNT - len(gone)} and reopened.info().removed_pending == 0
    shard = reopened._shards[0]
    kept = np.setdiff1d(np.arange(COUNT), gone)
    np.testing.assert_array_equal(shard.ids, kept)
    np.testing.assert_array_equal(faiss_index.all_vectors(shard.index), decoded[kept])  # the same codes, renumbered
    hits = reopened.search(vectors[kept[:50]], 1)
    assert np.mean([found[0].id == row for found, row in zip(hits, kept[:50])]) > 0.9
    assert all(found[0].id not in set(gone) and found[0].text == f"text {found[0].id}" for found in hits)


def test_texts_added_to_an_ivfpq_database_are_found_at_once(tmp_path: Path) -> None:
    encoder = HashingEncoder(dim=DIM, model_id="synthetic")
    database = ivfpq_database(tmp_path / "db", clustered(COUNT, 1))
    assert database.add_texts(["a yellow submarine"], encoder).added == 1
    reopened = PersistentTextDatabase.open(tmp_path / "db")
    assert reopened.info().index_kinds == {"ivfpq": COUNT, "flat": 1}
    assert reopened.search_texts(["yellow submarine"], encoder, 1)[0][0].text == "a yellow submarine"


@pytest.mark.parametrize("layout", ["OPQ16_64,IVF64,PQ16x8", "OPQ16_64,IVF64_HNSW32,PQ16x8", "IVF64,PQ16x8"])
def test_a_clip_retrieval_folder_with_an_ivfpq_index_opens(tmp_path: Path, layout: str) -> None:
    # autofaiss writes indexes like "OPQ256_768,IVF16384_HNSW32,PQ256x8" for LAION: the same layouts, small.
    vectors = clustered(4_000, 3)
    captions = [f"caption {i}" for i in range(len(vectors))]
    index = faiss.index_factory(DIM, layout, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    folder = tmp_path / "laion"
    (folder / "metadata").mkdir(parents=True)
    faiss.write_index(index, str(folder / "text.index"))
    for number, part in enumerate(np.array_split(np.arange(len(captions)), 3)):
        pq.write_table(pa.table({"caption": [captions[i] for i in part]}), folder / "metadata" / f"metadata_{number}.parquet")
    database = open_database(folder, model_id="synthetic", dim=DIM)
    assert isinstance(database, ClipRetrievalDatabase) and len(database) == len(vectors)
    hits = database.search(vectors[:100], 5)
    assert np.mean([found[0].text == captions[row] for row, found in enumerate(hits)]) > 0.9
    assert all(found[0].text == captions[found[0].id] for found in hits)
    assert all(hit.vector is not None and float(hit.vector @ vectors[hit.id]) > 0.8 for hit in hits[0])
