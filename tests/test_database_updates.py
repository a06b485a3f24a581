"""Crash safety, resuming, the clip-retrieval layout, the default database, the CLI, a real model."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from database_support import HashingEncoder, SentenceTransformerEncoder
from typer.testing import CliRunner

import tagseg.database.default as default_module
import tagseg.database.store as store
from tagseg.database import ClipRetrievalDatabase, PersistentTextDatabase, build_database, default_database, open_database
from tagseg.errors import DatabaseError
from tagseg.interfaces import UpdatableTextDatabase

TESTS = Path(__file__).parent


def numbered_texts(path: Path, count: int) -> list[str]:
    texts = [f"entry number {i}" for i in range(count)]
    path.write_text("\n".join(texts) + "\n")
    return texts


def test_a_failure_while_writing_keeps_the_last_good_state_and_resume_finishes(tmp_path: Path, monkeypatch) -> None:
    encoder = HashingEncoder()
    texts = numbered_texts(tmp_path / "in.txt", 300)
    writes = 0
    real_write = store.write_atomically

    def failing_write(target: Path, write) -> None:
        nonlocal writes
        writes += 1
        if writes == 9:  # in the middle of the fourth checkpoint's files
            write(store.Path(str(target) + ".half"))
            raise OSError("disk full")
        real_write(target, write)

    monkeypatch.setattr(store, "write_atomically", failing_write)
    with pytest.raises(OSError, match="disk full"):
        build_database(tmp_path / "db", [tmp_path / "in.txt"], encoder, batch_size=16, checkpoint_rows=32, progress=False)
    partial = PersistentTextDatabase.open(tmp_path / "db", encoder=encoder)
    committed = sorted(partial.texts())
    assert 0 < len(committed) < len(texts) and committed == sorted(texts[: len(committed)])
    assert not partial.info().build_complete

    monkeypatch.setattr(store, "write_atomically", real_write)
    report = build_database(tmp_path / "db", [tmp_path / "in.txt"], encoder, resume=True, batch_size=16, progress=False)
    assert report.stored == len(texts) and report.duplicates == 0
    finished = PersistentTextDatabase.open(tmp_path / "db", encoder=encoder)
    assert sorted(finished.texts()) == sorted(texts) and finished.info().build_complete
    with pytest.raises(DatabaseError, match="no interrupted build"):
        build_database(tmp_path / "db", [tmp_path / "in.txt"], encoder, resume=True, progress=False)


def test_a_failed_add_or_remove_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    encoder = HashingEncoder()
    texts = numbered_texts(tmp_path / "in.txt", 50)
    build_database(tmp_path / "db", [tmp_path / "in.txt"], encoder, progress=False)
    database = PersistentTextDatabase.open(tmp_path / "db")

    def broken_manifest_write(target: Path, data: bytes) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(store, "write_bytes_atomically", broken_manifest_write)
    with pytest.raises(OSError):
        database.add_texts(["a new text"], encoder)
    with pytest.raises(OSError):
        database.remove(texts=texts[:40])
    monkeypatch.undo()
    assert sorted(PersistentTextDatabase.open(tmp_path / "db").texts()) == sorted(texts)


def test_a_killed_build_process_leaves_a_loadable_database_that_resumes(tmp_path: Path) -> None:
    texts = numbered_texts(tmp_path / "in.txt", 400)
    # The build stops for good before its 6th batch of 16 (two checkpoints of 32 committed by then)
    # and is killed there: the same point on any machine, however busy.
    stalled = tmp_path / "stalled"
    script = textwrap.dedent(
        f"""
        import pathlib, sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from database_support import HashingEncoder
        from tagseg.database import build_database

        class Stalling(HashingEncoder):
            def encode(self, texts):
                if self.calls == 5:
                    pathlib.Path({str(stalled)!r}).touch()
                    time.sleep(3600)
                return super().encode(texts)

        build_database({str(tmp_path / 'db')!r}, [{str(tmp_path / 'in.txt')!r}], Stalling(),
                       batch_size=16, checkpoint_rows=32, progress=False)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    while not stalled.exists():
        assert process.poll() is None, "the build ended before it was killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = PersistentTextDatabase.open(tmp_path / "db")
    assert 64 <= len(partial) < len(texts)
    assert sorted(partial.texts()) == sorted(texts[: len(partial)])
    build_database(tmp_path / "db", [tmp_path / "in.txt"], HashingEncoder(), resume=True, progress=False)
    assert sorted(PersistentTextDatabase.open(tmp_path / "db").texts()) == sorted(texts)


def make_clip_retrieval_folder(folder: Path, captions: list[str], vectors: np.ndarray, *, arrow: bool) -> None:
    (folder / "metadata").mkdir(parents=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(folder / "text.index"))
    half = len(captions) // 2
    for number, part in enumerate([captions[:half], captions[half:]]):
        table = pa.table({"caption": part, "url": [f"http://example.invalid/{c}" for c in part]})
        if arrow:
            with pa.ipc.new_file(str(folder / "metadata" / f"{number}_en.arrow"), table.schema) as writer:
                writer.write_table(table)
        else:
            pq.write_table(table, folder / "metadata" / f"metadata_{number}.parquet")


@pytest.mark.parametrize("arrow", [True, False])
def test_a_clip_retrieval_folder_opens_in_place(tmp_path: Path, arrow: bool) -> None:
    encoder = HashingEncoder(dim=32)
    captions = ["a red car on a road", "a cat on a sofa", "a dog in a park", "a boat on the sea", "two trees"]
    make_clip_retrieval_folder(tmp_path / "cc", captions, encoder.encode(captions).numpy(), arrow=arrow)
    before = sorted(p.name for p in (tmp_path / "cc").rglob("*"))
    database = open_database(tmp_path / "cc", encoder=encoder)
    assert isinstance(database, ClipRetrievalDatabase) and len(database) == 5 and database.model_id == encoder.model_id
    assert not isinstance(database, UpdatableTextDatabase)  # read-only: the service offers no writes
    hits = database.search(encoder.encode(["a dog in a park", "cat sofa"]).numpy(), 2)
    assert hits[0][0].text == "a dog in a park" and hits[1][0].text == "a cat on a sofa"
    np.testing.assert_allclose(hits[0][0].vector, encoder.encode(["a dog in a park"]).numpy()[0], atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "cc").rglob("*")) == before
    with pytest.raises(DatabaseError, match="32-d vectors.*64-d"):
        open_database(tmp_path / "cc", model_id="openai/clip-vit-large-patch14", dim=64)
    with pytest.raises(DatabaseError, match="no column 'text'"):
        ClipRetrievalDatabase(tmp_path / "cc", column="text")


def test_a_damaged_clip_retrieval_folder_fails_clearly(tmp_path: Path) -> None:
    encoder = HashingEncoder(dim=32)
    captions = ["one", "two", "three", "four"]
    make_clip_retrieval_folder(tmp_path / "cc", captions, encoder.encode(captions).numpy(), arrow=True)
    first = sorted((tmp_path / "cc" / "metadata").iterdir())[0]
    first.unlink()
    with pytest.raises(DatabaseError, match="4 vectors but 2 rows"):
        ClipRetrievalDatabase(tmp_path / "cc")
    first.write_bytes(b"ARROW1 but not really")
    with pytest.raises(DatabaseError, match="corrupt or not Arrow"):
        ClipRetrievalDatabase(tmp_path / "cc")
    (tmp_path / "cc" / "text.index").write_bytes(b"junk")
    with pytest.raises(DatabaseError, match="corrupt or not a FAISS index"):
        ClipRetrievalDatabase(tmp_path / "cc")


def test_the_default_database_is_built_once_and_shared(tmp_path: Path, monkeypatch) -> None:
    vocabulary = tmp_path / "vocabulary.txt.gz"
    vocabulary.write_bytes(gzip.compress(b"cat\ndog\nred car\nsailing boat\n"))
    monkeypatch.setattr(default_module, "default_vocabulary_path", lambda *file: vocabulary)
    monkeypatch.setenv("TAGSEG_CACHE", str(tmp_path / "cache"))
    encoders = [HashingEncoder(delay_s=0.05) for _ in range(3)]
    results: list[PersistentTextDatabase] = []
    threads = [threading.Thread(target=lambda e=e: results.append(default_database(e, progress=False))) for e in encoders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(e.calls for e in encoders) == 1
    assert {r.path for r in results} == {results[0].path} and results[0].path.parent == tmp_path / "cache" / "databases"
    assert sorted(results[0].texts()) == ["cat", "dog", "red car", "sailing boat"]
    other = default_database(HashingEncoder(model_id="another/model"), progress=False)
    assert other.path != results[0].path


def test_the_shipped_vocabulary_is_packaged_with_its_licence() -> None:
    names = default_module.default_vocabulary()
    assert 30_000 <= len(names) <= 40_000 and len(set(names)) == len(names)
    assert {"tabby", "golden retriever", "sailboat", "pizza"} <= set(names)
    folder = default_module.default_vocabulary_path().parent
    assert "Princeton University" in (folder / "LICENSE-WordNet-3.0.txt").read_text()


def test_the_command_line_builds_updates_inspects_and_searches(tmp_path: Path, monkeypatch) -> None:
    from tagseg.cli import app

    monkeypatch.setattr("tagseg.builder.text_encoder_for", lambda source, config=None: HashingEncoder(model_id=source))
    (tmp_path / "in.csv").write_text("caption,n\nred car,1\ntabby cat,2\nsmall dog,3\nred car,4\n")
    runner = CliRunner()
    db = str(tmp_path / "db")
    result = runner.invoke(app, ["db", "build", db, str(tmp_path / "in.csv"), "--text-model", "test/cli"])
    assert result.exit_code == 0, result.output
    assert "Stored 3 texts" in result.output and "1 duplicates" in result.output
    result = runner.invoke(app, ["db", "add", db, "yellow submarine", "red car"])
    assert result.exit_code == 0 and "Added 1 texts (now 4)" in result.output
    result = runner.invoke(app, ["db", "search", db, "submarine", "-k", "2"])
    assert result.exit_code == 0 and "yellow submarine" in result.output
    result = runner.invoke(app, ["db", "remove", db, "tabby cat"])
    assert result.exit_code == 0 and "Removed 1 texts (now 3)" in result.output
    result = runner.invoke(app, ["db", "info", db, "--json", "--verify"])
    facts = json.loads(result.output)
    assert facts["count"] == 3 and facts["model_id"] == "test/cli" and facts["sources"] == {"in.csv": 2, "added": 1}
    result = runner.invoke(app, ["db", "search", db, "car", "--text-model", "other/model"])
    assert result.exit_code == 1 and "test/cli" in result.output and "other/model" in result.output
    result = runner.invoke(app, ["db", "info", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_the_command_line_with_a_real_clip_text_tower(tmp_path: Path) -> None:
    from tagseg.cli import app
    from tagseg.testing import save_random_clip

    model = save_random_clip(tmp_path / "clip", "tiny")
    (tmp_path / "in.txt").write_text("cat\ndog\nboat\n")
    runner = CliRunner()
    db = str(tmp_path / "db")
    result = runner.invoke(app, ["db", "build", db, str(tmp_path / "in.txt"), "--text-model", str(model)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["db", "search", db, "cat", "-k", "1"])
    assert result.exit_code == 0 and "1.000" in result.output and "cat" in result.output


@pytest.mark.slow
def test_a_real_sentence_comes_back_from_a_paraphrase(tmp_path: Path) -> None:
    encoder = SentenceTransformerEncoder()
    sentences = [
        "A brown dog is running across a grassy park.",
        "A plate of spaghetti with tomato sauce on a wooden table.",
        "A red double-decker bus drives down a busy street.",
        "Two children build a sandcastle on the beach.",
        "A snow-covered mountain under a clear blue sky.",
    ]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps({"caption": s}) + "\n" for s in sentences))
    build_database(tmp_path / "db", [tmp_path / "captions.jsonl"], encoder, progress=False)
    database = PersistentTextDatabase.open(tmp_path / "db", encoder=encoder)
    hits = database.search_texts(["a puppy playing on the lawn", "pasta dinner", "kids playing with sand at the seaside"], encoder, k=1)
    assert [h[0].text for h in hits] == [sentences[0], sentences[1], sentences[3]]
    assert database.search_texts([sentences[2]], encoder, k=1)[0][0].similarity == pytest.approx(1.0, abs=1e-4)


def test_the_command_line_embeds_the_default_vocabulary_ahead(tmp_path: Path, monkeypatch) -> None:
    from tagseg.cli import app

    vocabulary = tmp_path / "vocabulary.txt.gz"
    vocabulary.write_bytes(gzip.compress(b"cat\ndog\nred car\n"))
    monkeypatch.setattr(default_module, "default_vocabulary_path", lambda *file: vocabulary)
    monkeypatch.setenv("TAGSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("tagseg.cli.db._load_encoder", lambda source: HashingEncoder(model_id=source))
    result = CliRunner().invoke(app, ["db", "default", "--text-model", "test/default"])
    assert result.exit_code == 0, result.output
    assert "3 names embedded with test/default" in result.output
    assert sorted(default_database(HashingEncoder(model_id="test/default"), progress=False).texts()) == ["cat", "dog", "red car"]


@pytest.mark.parametrize("command", [["add", "a new caption"], ["remove", "a cat on a sofa"]])
def test_changing_a_clip_retrieval_folder_says_it_is_read_only(tmp_path: Path, command: list[str]) -> None:
    from tagseg.cli import app

    encoder = HashingEncoder(dim=32)
    captions = ["a red car on a road", "a cat on a sofa", "a dog in a park", "two trees"]
    make_clip_retrieval_folder(tmp_path / "cc", captions, encoder.encode(captions).numpy(), arrow=False)
    before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "cc").rglob("*"))
    result = CliRunner().invoke(app, ["db", command[0], str(tmp_path / "cc"), command[1]])
    output = " ".join(result.output.split())
    assert result.exit_code != 0
    assert "clip-retrieval folder" in output and "never changes" in output and "tagseg db build COPY" in output
    assert "manifest" not in output
    assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "cc").rglob("*")) == before


def test_files_left_by_an_interrupted_write_are_removed_on_open(tmp_path: Path) -> None:
    from tagseg.files import exclusive_lock

    encoder = HashingEncoder()
    (tmp_path / "in.txt").write_text("a red car\na blue boat\n", encoding="utf-8")
    build_database(tmp_path / "db", [tmp_path / "in.txt"], encoder, progress=False)
    kept = sorted(p.name for p in (tmp_path / "db").iterdir())
    leftovers = ["shard-00000000deadbeef.parquet", "removed-00000000deadbeef.npy", "manifest.json.tmp"]
    for name in leftovers:
        (tmp_path / "db" / name).write_bytes(b"half written")
    with exclusive_lock(tmp_path / "db" / store.LOCK):  # a writer at work: its files are not leftovers
        assert len(PersistentTextDatabase.open(tmp_path / "db")) == 2
        assert set(leftovers) <= {p.name for p in (tmp_path / "db").iterdir()}
    database = PersistentTextDatabase.open(tmp_path / "db")
    assert sorted(p.name for p in (tmp_path / "db").iterdir()) == sorted({*kept, store.LOCK})
    assert sorted(database.texts()) == ["a blue boat", "a red car"]


def test_db_build_for_the_toy_preset_works_offline_and_counts_texts(tmp_path: Path) -> None:
    from tagseg import TAG
    from tagseg.cli import app
    from tagseg.toy import toy_captions, toy_scene

    captions = toy_captions()
    (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["db", "build", str(tmp_path / "db"), str(tmp_path / "captions.txt"), "--text-model", "toy"])
    assert result.exit_code == 0, result.output
    progress = next(line for line in result.output.splitlines() if line.startswith("Embedding captions.txt"))
    assert f"{len(captions)} texts" in progress  # texts, not bytes
    assert str((tmp_path / "captions.txt").stat().st_size) not in progress
    added = CliRunner().invoke(app, ["db", "add", str(tmp_path / "db"), "a purple umbrella in the rain"])
    assert added.exit_code == 0 and "Added 1 texts" in added.output, added.output
    image, regions, names = toy_scene(seed=1)
    segmentation = TAG.from_pretrained("toy", database=tmp_path / "db", image_size=128)(image)
    assert {segment.label for segment in segmentation.segments} & set(names)


def test_the_landmarks_vocabulary_adds_wordnet_places_to_the_default(tmp_path: Path, monkeypatch) -> None:
    landmarks = default_module.default_vocabulary_path(default_module.LANDMARK_VOCABULARY)
    with gzip.open(landmarks, "rt", encoding="utf-8") as handle:
        places = [line.rstrip("\n") for line in handle]
    assert 4_000 <= len(places) <= 5_000 and len(set(places)) == len(places)
    assert {"Leaning Tower of Pisa", "Colosseum", "Eiffel Tower", "Parthenon", "Grand Canyon", "Nile", "Kyoto"} <= set(places)
    assert "Princeton University" in (landmarks.parent / "LICENSE-WordNet-3.0.txt").read_text()
    assert default_module.default_vocabulary("landmarks") == default_module.default_vocabulary() + places
    tiny = tmp_path / "tiny.txt.gz"
    tiny.write_bytes(gzip.compress(b"cat\ntower\n"))
    shipped = {default_module.DEFAULT_VOCABULARY: tiny, default_module.LANDMARK_VOCABULARY: landmarks}
    monkeypatch.setattr(default_module, "default_vocabulary_path", lambda file=default_module.DEFAULT_VOCABULARY: shipped[file])
    monkeypatch.setenv("TAGSEG_CACHE", str(tmp_path / "cache"))
    from tagseg.builder import check_database, database_from_spec

    check_database("landmarks")
    database = database_from_spec("landmarks", HashingEncoder(model_id="test/landmarks"))
    assert sorted(database.texts()) == sorted({"cat", "tower", *places})
    assert database.path.name.startswith("landmarks-")
    assert database.path != default_database(HashingEncoder(model_id="test/landmarks"), progress=False).path
    with pytest.raises(DatabaseError, match="choose from: default, landmarks"):
        default_module.vocabulary_paths("monuments")
