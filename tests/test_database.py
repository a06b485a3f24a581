"""The persistent text database: formats, de-duplication, updates, model checks, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from database_support import HashingEncoder

from tagseg.database import (
    InMemoryTextDatabase,
    PersistentTextDatabase,
    build_database,
    open_database,
)
from tagseg.errors import DatabaseError
from tagseg.interfaces import TextDatabase, UpdatableTextDatabase

TEXTS = ["red car", "blue car", "tabby cat", "small dog", "golden retriever dog", "sailing boat", "green tree"]


@pytest.fixture()
def encoder() -> HashingEncoder:
    return HashingEncoder()


def build(tmp_path: Path, encoder: HashingEncoder, inputs: list[Path], **options) -> PersistentTextDatabase:
    build_database(tmp_path / "db", inputs, encoder, progress=False, **options)
    return PersistentTextDatabase.open(tmp_path / "db", encoder=encoder)


def top(database: TextDatabase, encoder: HashingEncoder, query: str, k: int = 3) -> list[str]:
    return [hit.text for hit in database.search(encoder.encode([query]).numpy(), k)[0]]


def write_inputs(folder: Path) -> dict[str, Path]:
    files = {
        "txt": folder / "texts.txt",
        "gz": folder / "texts.txt.gz",
        "csv": folder / "texts.csv",
        "tsv": folder / "texts.tsv",
        "jsonl": folder / "texts.jsonl",
        "parquet": folder / "texts.parquet",
    }
    files["txt"].write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    files["gz"].write_bytes(gzip.compress(("\n".join(TEXTS) + "\n").encode()))
    files["csv"].write_text("id,caption\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS)), encoding="utf-8")
    files["tsv"].write_text("id\tcaption\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    files["jsonl"].write_text("".join(json.dumps({"caption": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)))
    pq.write_table(pa.table({"n": list(range(len(TEXTS))), "caption": TEXTS}), files["parquet"])
    return files


@pytest.mark.parametrize("kind", ["txt", "gz", "csv", "tsv", "jsonl", "parquet"])
def test_every_input_format_builds_the_same_database(tmp_path: Path, encoder: HashingEncoder, kind: str) -> None:
    files = write_inputs(tmp_path)
    database = build(tmp_path, encoder, [files[kind]], column=None if kind in ("txt", "gz") else "caption")
    assert sorted(database.texts()) == sorted(TEXTS)
    assert top(database, encoder, "a dog", 2) == ["small dog", "golden retriever dog"]
    info = database.info()
    assert info.count == len(TEXTS) and info.model_id == encoder.model_id and info.dim == encoder.dim
    assert info.sources == {files[kind].name: len(TEXTS)}
    assert info.size_bytes > 0 and info.build_complete


def test_search_matches_the_in_memory_database(tmp_path: Path, encoder: HashingEncoder) -> None:
    database = build(tmp_path, encoder, [write_inputs(tmp_path)["txt"]])
    reference = InMemoryTextDatabase.from_texts(TEXTS, encoder)
    queries = encoder.encode([f"query {i} {t}" for i, t in enumerate(TEXTS * 3)][:15]).numpy()
    ours, theirs = database.search(queries, 4), reference.search(queries, 4)
    assert len(ours) == 15
    for query, a, b in zip(queries, ours, theirs):
        np.testing.assert_allclose([h.similarity for h in a], [h.similarity for h in b], atol=1e-5)
        for hit in a:
            stored = encoder.encode([hit.text]).numpy()[0]
            np.testing.assert_allclose(hit.vector, stored, atol=1e-6)
            assert hit.similarity == pytest.approx(float(query @ stored), abs=1e-5)
    assert isinstance(database, TextDatabase)


def test_exact_duplicates_blank_lines_and_bad_bytes_are_skipped_and_counted(tmp_path: Path, encoder: HashingEncoder) -> None:
    source = tmp_path / "messy.txt"
    source.write_bytes(b"red car\n\n   \nred car\n  red car  \nbad \xff\xfe bytes\nblue car\r\n")
    report = build_database(tmp_path / "db", [source], encoder, progress=False)
    assert (report.stored, report.duplicates, report.blank, report.unreadable) == (2, 2, 2, 1)
    assert sorted(PersistentTextDatabase.open(tmp_path / "db").texts()) == ["blue car", "red car"]


def test_duplicates_across_inputs_are_stored_once(tmp_path: Path, encoder: HashingEncoder) -> None:
    files = write_inputs(tmp_path)
    report = build_database(tmp_path / "db", [files["txt"], files["csv"]], encoder, column="caption", progress=False)
    assert report.stored == len(TEXTS) and report.duplicates == len(TEXTS)


def test_add_and_remove_are_visible_in_the_next_search(tmp_path: Path, encoder: HashingEncoder) -> None:
    database = build(tmp_path, encoder, [write_inputs(tmp_path)["txt"]])
    assert "yellow submarine" not in top(database, encoder, "yellow submarine")
    report = database.add_texts(["yellow submarine", "red car", "  ", "yellow submarine"], encoder)
    assert (report.added, report.duplicates, report.blank) == (1, 2, 1)
    assert top(database, encoder, "yellow submarine")[0] == "yellow submarine"
    reopened = PersistentTextDatabase.open(tmp_path / "db", encoder=encoder)
    assert top(reopened, encoder, "yellow submarine")[0] == "yellow submarine"
    assert len(reopened) == len(TEXTS) + 1 and reopened.info().sources["added"] == 1

    assert reopened.remove(texts=["small dog"]) == 1
    assert "small dog" not in top(reopened, encoder, "small dog", k=len(TEXTS) + 1)
    assert "small dog" not in top(PersistentTextDatabase.open(tmp_path / "db"), encoder, "small dog", k=20)
    hit_id = reopened.search(encoder.encode(["sailing boat"]).numpy(), 1)[0][0].id
    assert reopened.remove(ids=[hit_id]) == 1 and reopened.remove(texts=["not stored"]) == 0
    survivors = sorted(PersistentTextDatabase.open(tmp_path / "db").texts())
    assert survivors == sorted(set(TEXTS + ["yellow submarine"]) - {"small dog", "sailing boat"})
    assert len(PersistentTextDatabase.open(tmp_path / "db")) == len(survivors)
    assert reopened.add_texts(["small dog"], encoder).added == 1
    assert top(reopened, encoder, "small dog", 1) == ["small dog"]


@pytest.mark.parametrize("kind", ["memory", "persistent"])
def test_both_databases_take_writes_through_the_write_seam(tmp_path: Path, encoder: HashingEncoder, kind: str) -> None:
    template = "a photo of {}"
    if kind == "memory":
        database: UpdatableTextDatabase = InMemoryTextDatabase.from_texts(TEXTS, encoder, template=template)
    else:
        database = PersistentTextDatabase.create(tmp_path / "db", model_id=encoder.model_id, dim=encoder.dim, template=template)
        database.add_texts(TEXTS, encoder)
    assert isinstance(database, UpdatableTextDatabase) and database.template == template
    report = database.add_texts(["yellow submarine", " red car ", "", "yellow submarine"], encoder)
    assert (report.added, report.duplicates, report.blank) == (1, 2, 1)
    assert database.remove(["small dog", "not stored"]) == 1
    expected = [t for t in TEXTS if t != "small dog"] + ["yellow submarine"]
    assert len(database) == len(expected)
    # independent check: every stored vector is the template-embedded text, searched exactly
    vectors = encoder.encode([template.format(t) for t in expected]).numpy()
    query = encoder.encode([template.format("yellow submarine")]).numpy()
    order = np.argsort(-(query @ vectors.T)[0], kind="stable")[:3]
    assert [hit.text for hit in database.search(query, 3)[0]] == [expected[i] for i in order]
    if kind == "memory":
        with pytest.raises(DatabaseError, match="empty"):
            database.remove(expected)


def test_many_removals_compact_the_shard(tmp_path: Path, encoder: HashingEncoder) -> None:
    database = build(tmp_path, encoder, [write_inputs(tmp_path)["txt"]])
    database.remove(texts=TEXTS[:4])
    assert database.info().removed_pending == 0
    assert sorted(PersistentTextDatabase.open(tmp_path / "db").texts()) == sorted(TEXTS[4:])
    database.remove(texts=TEXTS[4:])
    assert len(database) == 0 and database.search(encoder.encode(["car"]).numpy(), 3) == [[]]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_what_exact_search_finds(tmp_path: Path, encoder: HashingEncoder, kind: str) -> None:
    texts = [f"item {i} {w}" for i, w in enumerate(["alpha", "beta", "gamma", "delta"] * 200)]
    (tmp_path / "many.txt").write_text("\n".join(texts))
    database = build(tmp_path, encoder, [tmp_path / "many.txt"], index=kind)
    assert database.info().index_kinds == {kind: len(texts)}
    assert top(database, encoder, "item 17 beta", 1) == ["item 17 beta"]
    database.add_texts(["brand new entry"], encoder)
    assert top(PersistentTextDatabase.open(tmp_path / "db"), encoder, "brand new entry", 1) == ["brand new entry"]
    hits = database.search(encoder.encode(["item 3 delta"]).numpy(), 5)[0]
    assert all(hit.vector is not None and abs(np.linalg.norm(hit.vector) - 1) < 1e-2 for hit in hits)


def test_memory_mapped_ivf_lists_start_no_prefetch_threads(tmp_path: Path) -> None:
    import faiss

    from tagseg.database import index as faiss_index

    vectors = np.random.default_rng(0).standard_normal((512, 16)).astype(np.float32)
    index = faiss_index.new_index("ivf", 16, len(vectors))
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "v.faiss"))
    opened = faiss_index.read_index(tmp_path / "v.faiss")
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(opened).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.prefetch_nthread == 0


def test_a_mismatched_text_model_or_dimension_names_both(tmp_path: Path, encoder: HashingEncoder) -> None:
    build(tmp_path, encoder, [write_inputs(tmp_path)["txt"]])
    other = HashingEncoder(dim=32, model_id="openai/clip-vit-large-patch14")
    with pytest.raises(DatabaseError, match=r"test/hashing-bow.*dim 64.*clip-vit-large-patch14.*dim 32"):
        PersistentTextDatabase.open(tmp_path / "db", encoder=other)
    with pytest.raises(DatabaseError, match="other/model"):
        open_database(tmp_path / "db", model_id="other/model", dim=64)
    with pytest.raises(DatabaseError, match="test/hashing-bow"):
        PersistentTextDatabase.open(tmp_path / "db").add_texts(["x"], HashingEncoder(model_id="other/model"))
    with pytest.raises(DatabaseError, match="Query dimension 32"):
        PersistentTextDatabase.open(tmp_path / "db").search(np.ones((1, 32), np.float32), 1)


def test_bad_inputs_fail_clearly(tmp_path: Path, encoder: HashingEncoder) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n \n\t\n")
    files = write_inputs(tmp_path)
    cases = [
        (tmp_path / "empty.txt", None, "is empty"),
        (tmp_path / "blank.txt", None, "No texts to store.*3 blank"),
        (tmp_path / "absent.txt", None, "does not exist"),
        (files["csv"], "title", "no column 'title'.*id, caption"),
        (files["parquet"], "title", "no column 'title'.*n, caption"),
        (files["parquet"], "n", "holds int64, not text"),
        (files["jsonl"], "title", "no column 'title'"),
    ]
    for number, (source, column, message) in enumerate(cases):
        with pytest.raises(DatabaseError, match=message):
            build_database(tmp_path / f"db{number}", [source], encoder, column=column, progress=False)
        assert not (tmp_path / f"db{number}").exists()
    (tmp_path / "two.csv").write_text("a,b\nx,y\n")
    with pytest.raises(DatabaseError, match="choose one with --column"):
        build_database(tmp_path / "dbx", [tmp_path / "two.csv"], encoder, progress=False)
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatabaseError, match="not a readable Parquet"):
        build_database(tmp_path / "dby", [tmp_path / "fake.parquet"], encoder, progress=False)


def test_broken_jsonl_records_are_skipped_and_counted(tmp_path: Path, encoder: HashingEncoder) -> None:
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b'{"text": "red car"}\n{broken\n{"text": 5}\n{"other": "x"}\n\n{"text": "blue car"}\n')
    report = build_database(tmp_path / "db", [source], encoder, progress=False)
    assert (report.stored, report.unreadable, report.blank) == (2, 3, 1)


def test_damaged_database_folders_fail_clearly(tmp_path: Path, encoder: HashingEncoder) -> None:
    build(tmp_path, encoder, [write_inputs(tmp_path)["txt"]])
    folder = tmp_path / "db"
    manifest = json.loads((folder / "manifest.json").read_text())
    name = manifest["shards"][0]["name"]

    parquet = folder / f"{name}.parquet"
    original = parquet.read_bytes()
    parquet.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(DatabaseError, match="checksum"):
        PersistentTextDatabase.open(folder)
    parquet.write_bytes(b"garbage")
    with pytest.raises(DatabaseError, match="bytes, the manifest says"):
        PersistentTextDatabase.open(folder)
    parquet.write_bytes(original)
    assert len(PersistentTextDatabase.open(folder)) == len(TEXTS)

    index = folder / f"{name}.faiss"
    saved = index.read_bytes()
    index.write_bytes(b"\0" * len(saved))
    with pytest.raises(DatabaseError, match="corrupt"):
        PersistentTextDatabase.open(folder, verify=False)
    index.unlink()
    with pytest.raises(DatabaseError, match="missing"):
        PersistentTextDatabase.open(folder)
    index.write_bytes(saved)

    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(DatabaseError, match="not valid JSON"):
        PersistentTextDatabase.open(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(DatabaseError, match="no manifest.json"):
        open_database(folder)
    with pytest.raises(DatabaseError, match="does not exist"):
        open_database(tmp_path / "nowhere")


def test_an_existing_database_is_not_overwritten_unless_asked(tmp_path: Path, encoder: HashingEncoder) -> None:
    files = write_inputs(tmp_path)
    build(tmp_path, encoder, [files["txt"]])
    with pytest.raises(DatabaseError, match="already exists"):
        build_database(tmp_path / "db", [files["txt"]], encoder, progress=False)
    (tmp_path / "other.txt").write_text("zebra\nlion\n")
    build_database(tmp_path / "db", [tmp_path / "other.txt"], encoder, overwrite=True, progress=False)
    assert sorted(PersistentTextDatabase.open(tmp_path / "db").texts()) == ["lion", "zebra"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("compressed", [False, True])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_text_or_column(
    tmp_path: Path, encoder: HashingEncoder, compressed: bool
) -> None:
    bom = b"\xef\xbb\xbf"
    files = {"in.csv": bom + b"text,id\r\na red car,1\r\ntabby cat,2\r\n", "in.txt": bom + b"a red car\ntabby cat\na red car\n"}
    for name, data in files.items():
        path = tmp_path / (name + (".gz" if compressed else ""))
        path.write_bytes(gzip.compress(data) if compressed else data)
        database = tmp_path / f"db-{name}"
        report = build_database(database, [path], encoder, column="text" if name.endswith("csv") else None, progress=False)
        assert report.stored == 2
        assert sorted(PersistentTextDatabase.open(database).texts()) == ["a red car", "tabby cat"]


def test_build_progress_counts_embedded_texts_with_an_estimated_total(tmp_path: Path) -> None:
    from tagseg.database import build
    from tagseg.progress import ProgressListener

    seen: list[tuple[float, float | None]] = []
    tasks: list[str] = []

    class Recorder(ProgressListener):
        def begin(self, description: str, total: int | None) -> None:
            tasks.append(description)

        def update(self, done: int, total: int | None) -> None:
            seen.append((done, total))

    source = tmp_path / "texts.txt"
    source.write_text("".join(f"text number {i:03d}\n" for i in range(100)))  # equal lengths: bytes track texts
    build.build_database(tmp_path / "db", [source], HashingEncoder(), batch_size=25, progress=Recorder())
    assert tasks == ["Embedding texts.txt"]
    assert [completed for completed, _ in seen] == [25, 50, 75, 100, 100]
    estimates = [total for _, total in seen]
    assert all(total is not None and abs(total - 100) <= 4 for total in estimates)  # texts, not bytes
    assert seen[-1] == (100, 100)
