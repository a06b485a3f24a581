"""The Ray engine on a local Ray runtime: same files as the local engine, exactly once, same databases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from tagseg.batch import FAILURES_FILE, BatchListener, ImageOutcome, segment_files
from tagseg.cli import app
from tagseg.config import preset
from tagseg.database import PersistentTextDatabase, build_database
from tagseg.masks import rle_to_mask
from tagseg.toy import ToyTextEncoder, toy_captions, toy_scene

IMAGES = 40


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for the module: two CPUs, no dashboard."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 toy-world scenes and one corrupt PNG in one folder."""
    folder = tmp_path_factory.mktemp("images")
    for seed in range(IMAGES):
        Image.fromarray(toy_scene(seed, size=(72, 96))[0]).save(folder / f"scene{seed:02d}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but the rest is not a PNG")
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):
    """The toy preset with its captions in a database folder, so workers open a stored database."""
    folder = tmp_path_factory.mktemp("db") / "toy"
    captions = tmp_path_factory.mktemp("captions") / "captions.txt"
    captions.write_text("\n".join(toy_captions()) + "\n", encoding="utf-8")
    build_database(folder, [captions], ToyTextEncoder(), progress=False)
    return preset("toy", image_size=72, database=str(folder))


@pytest.fixture(scope="module")
def local_run(images: Path, config, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("local")
    return out, segment_files([images], out, config=config, exports=["coco", "voc"])


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


# What docs/ray.md promises of the two engines' files: a Ray worker computes with its own threads,
# so its float sums run in another order than the local engine's and only rounding may differ.
ROUNDING = 1e-5
"""Scores, similarities and stored vectors agree to this in float32 (the JSON files keep 6 decimals)."""
BFLOAT16_ROUNDING = 1e-2
"""The same for models run in bfloat16 (about three significant digits)."""
PIXELS = 0.999
"""Share of each image's pixels on which masks and label maps agree."""
_RUN_DEPENDENT = {"timings", "date_created"}
_FROM_MASKS = {"area", "bbox"}  # follow the masks, which are compared pixel by pixel


def _assert_same_results(ours: Path, theirs: Path, names) -> None:  # type: ignore[no-untyped-def]
    """The files ``names`` under ``ours`` hold those under ``theirs`` up to rounding."""
    for name in names:
        mine, reference = ours / name, theirs / name
        if name.endswith(".png"):
            _assert_same_picture(mine, reference)
        elif name.endswith(".json"):
            _assert_close(json.loads(mine.read_text()), json.loads(reference.read_text()), name)
        else:
            assert mine.read_bytes() == reference.read_bytes(), name


def _assert_same_picture(mine: Path, reference: Path) -> None:
    a, b = Image.open(mine), Image.open(reference)
    assert (a.mode, a.size, a.getpalette()) == (b.mode, b.size, b.getpalette()), mine
    assert _agreement(np.asarray(a), np.asarray(b)) >= PIXELS, mine


def _assert_close(ours, theirs, where: str) -> None:  # type: ignore[no-untyped-def]
    if isinstance(theirs, dict) and {"size", "counts"} <= theirs.keys():  # a mask (RLE)
        assert _agreement(_mask(ours), _mask(theirs)) >= PIXELS, where
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), where
        for key in theirs.keys() - _RUN_DEPENDENT - _FROM_MASKS:
            _assert_close(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float) or isinstance(ours, float):
        assert ours == pytest.approx(theirs, abs=ROUNDING), where
    else:
        assert ours == theirs, where


def _mask(rle: dict) -> np.ndarray:
    """A mask from the per-image files' RLE or the COCO files' compressed one."""
    if isinstance(rle["counts"], str):
        return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    return rle_to_mask(rle)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels (all channels) equal in two images of the same shape."""
    assert a.shape == b.shape
    same = a == b
    return float((same.all(axis=-1) if same.ndim == 3 else same).mean())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {name: (p.stat().st_size, p.stat().st_mtime_ns) for name, p in _files(folder).items()}


@pytest.mark.ray
def test_ray_writes_the_local_engines_files_and_a_manifest_row_per_image(ray_runtime, images, config, local_run, tmp_path):
    local_out, local_report = local_run
    database_before = _snapshot(Path(config.database))
    out = tmp_path / "ray"
    from tagseg.engines.ray import MANIFEST_FILE, segment_with_ray

    report = segment_with_ray([images], out, config=config, exports=["coco", "voc"], workers=2, batch_size=4)

    local_files = _files(local_out)
    assert set(_files(out)) == set(local_files) | {MANIFEST_FILE}
    assert FAILURES_FILE in local_files and "results.coco.json" in local_files and "export/coco/instances.json" in local_files
    _assert_same_results(out, local_out, local_files)
    manifest = pq.read_table(out / MANIFEST_FILE).to_pylist()
    assert len(manifest) == IMAGES + 1 and len({row["name"] for row in manifest}) == IMAGES + 1
    [failed] = [row for row in manifest if row["status"] == "failed"]
    [local_failed] = local_report.failed
    assert failed["name"] == "corrupt" and failed["reason"] == local_failed.reason and "corrupt.png" in failed["reason"]
    for row in manifest:
        if row["status"] != "failed":
            segments = json.loads((out / f"{row['name']}.json").read_text())["segments"]
            assert row["status"] == "done" and row["reason"] is None
            assert row["labels"] == [s["label"] for s in segments] and row["scores"] == pytest.approx([s["score"] for s in segments], abs=1e-6)
    assert [(o.name, o.status, o.labels) for o in report.outcomes] == [(o.name, o.status, o.labels) for o in local_report.outcomes]
    assert _snapshot(Path(config.database)) == database_before  # opened read-only by every worker


class _Recorder(BatchListener):
    """Records the images that came back and whether workers were started to load models."""

    def __init__(self) -> None:
        self.finished: list[ImageOutcome] = []
        self.loaded = False

    def loading_models(self) -> None:
        self.loaded = True

    def image_finished(self, outcome: ImageOutcome) -> None:
        self.finished.append(outcome)


class _KillOneWorker(_Recorder):
    """Kills one segmenting actor with ``ray.kill`` once ``after`` images came back."""

    def __init__(self, ray, after: int) -> None:
        super().__init__()
        self.ray, self.after = ray, after
        self.killed: str | None = None

    def image_finished(self, outcome: ImageOutcome) -> None:
        super().image_finished(outcome)
        if len(self.finished) == self.after and self.killed is None:
            from ray._private.state import actors  # the state API needs a dashboard; this reads the GCS

            alive = [i for i, a in actors().items() if a["State"] == "ALIVE" and "_SegmentWorker" in a["ActorClassName"]]
            self.killed = alive[0]
            core_worker = self.ray._private.worker.global_worker.core_worker
            self.ray.kill(core_worker.get_actor_handle(self.ray.ActorID.from_hex(self.killed)), no_restart=False)


@pytest.mark.ray
def test_a_killed_worker_leaves_one_complete_output_per_image_and_a_rerun_does_nothing(ray_runtime, images, config, local_run, tmp_path):
    from ray._private.state import actors

    from tagseg.engines.ray import MANIFEST_FILE, segment_with_ray

    inputs = sorted(str(p) for p in images.glob("scene*.png"))
    out = tmp_path / "ray"
    killer = _KillOneWorker(ray_runtime, after=8)
    report = segment_with_ray(inputs, out, config=config, workers=2, batch_size=2, listener=killer)

    assert killer.killed is not None and actors(killer.killed)["NumRestarts"] >= 1
    assert report.ok and len(report.outcomes) == IMAGES
    names = [f"scene{seed:02d}" for seed in range(IMAGES)]
    expected = {f"{n}{suffix}" for n in names for suffix in (".json", ".overlay.png", ".labels.png")}
    assert set(_files(out)) == expected | {MANIFEST_FILE, "results.coco.json"}  # nothing partial, nothing twice
    _assert_same_results(out, local_run[0], [f"{n}{suffix}" for n in names for suffix in (".json", ".labels.png")])
    coco = json.loads((out / "results.coco.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [Path(p).name for p in inputs]  # relative to their folder
    manifest = pq.read_table(out / MANIFEST_FILE).to_pylist()
    assert sorted(row["name"] for row in manifest) == names
    assert {row["status"] for row in manifest} <= {"done", "skipped"}  # skipped: finished by the killed attempt

    before = _snapshot(out)
    rerun = _Recorder()
    again = segment_with_ray(inputs, out, config=config, workers=2, batch_size=2, listener=rerun)
    assert [o.status for o in again.outcomes] == ["skipped"] * IMAGES and not rerun.loaded
    changed = {name for name, facts in _snapshot(out).items() if before.get(name) != facts}
    assert changed <= {MANIFEST_FILE, "results.coco.json"}  # only the run files are rewritten


def _texts(count: int) -> list[str]:
    words = "cat dog car tree sky road grass house bird horse sheep cow boat train bus bottle chair table sofa plant".split()
    rng = np.random.default_rng(0)
    return [" ".join(["a", "photo", "of", *rng.choice(words, size=3)]) + f" {i}" for i in range(count)]


@pytest.mark.ray
def test_db_build_on_ray_gives_the_local_builds_database(ray_runtime, tmp_path):
    from tagseg.backbones.base import resolve_dtype
    from tagseg.builder import text_encoder_for
    from tagseg.engines.ray_database import build_database_with_ray
    from tagseg.testing import save_random_clip

    model = save_random_clip(tmp_path / "clip")
    source = tmp_path / "texts.txt"
    texts = _texts(20_000)
    source.write_text("\n".join(texts + texts[:50]) + "\n", encoding="utf-8")  # 50 duplicates
    encoder = text_encoder_for(str(model))  # as `tagseg db build` and each Ray worker build it
    rounding = BFLOAT16_ROUNDING if resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16 else ROUNDING
    local = build_database(tmp_path / "local", [source], encoder, batch_size=256, progress=False)
    run = build_database_with_ray(tmp_path / "ray", [source], str(model), workers=2, batch_size=256, progress=False)

    assert run.build.stored == local.stored == 20_000 and run.build.duplicates == local.duplicates == 50
    assert run.embedded == 20_000 and run.texts_per_second > 0
    ours, theirs = (PersistentTextDatabase.open(tmp_path / name, encoder=encoder) for name in ("ray", "local"))
    assert [(s["rows"], s["index"]) for s in ours.manifest["shards"]] == [(s["rows"], s["index"]) for s in theirs.manifest["shards"]]
    for mine, reference in zip(_stored_shards(tmp_path / "ray"), _stored_shards(tmp_path / "local")):
        assert mine[0].equals(reference[0])  # ids, texts, sources and hashes, row by row
        assert np.abs(mine[1] - reference[1]).max() <= rounding  # each vector, up to rounding
    queries = ["a photo of a cat", "dog on the road 17", "train", "a photo of sky grass 19999"]
    for mine, reference in zip(ours.search_texts(queries, encoder, k=10), theirs.search_texts(queries, encoder, k=10)):
        similarities = [h.similarity for h in reference]
        assert [h.similarity for h in mine] == pytest.approx(similarities, abs=2 * rounding)
        for rank, (hit, expected) in enumerate(zip(mine, reference)):  # two hits tied within rounding may swap
            tied = rank == len(reference) - 1 or any(
                abs(s - expected.similarity) <= 2 * rounding for other, s in enumerate(similarities) if other != rank
            )
            assert tied or (hit.id, hit.text) == (expected.id, expected.text)


def _stored_shards(folder: Path) -> list[tuple]:
    """Each shard's rows (Parquet) and vectors (FAISS), as the manifest lists them (store.py describes the layout)."""
    shards = []
    for shard in json.loads((folder / "manifest.json").read_text())["shards"]:
        [rows] = [folder / name for name in shard["files"] if name.endswith(".parquet")]
        [vectors] = [folder / name for name in shard["files"] if name.endswith(".faiss")]
        index = faiss.read_index(str(vectors))
        shards.append((pq.read_table(rows), index.reconstruct_n(0, index.ntotal)))
    return shards


def test_without_ray_the_engine_says_what_to_install(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when it is not installed
    image = tmp_path / "scene.png"
    Image.fromarray(toy_scene(0, size=(72, 96))[0]).save(image)
    result = CliRunner().invoke(app, ["segment", str(image), "--out", str(tmp_path / "out"), "--preset", "toy", "--engine", "ray"])
    assert result.exit_code != 0 and "pip install -e '.[ray]'" in result.output
    result = CliRunner().invoke(app, ["segment", str(image), "--out", str(tmp_path / "out"), "--preset", "toy"])
    assert result.exit_code == 0 and (tmp_path / "out" / "scene.json").is_file()


@pytest.mark.ray
def test_uris_and_datasets_are_read_through_pyarrow_and_missing_models_stop_the_run(ray_runtime, images, config, local_run, tmp_path):
    import shutil

    from tagseg.engines.ray import segment_with_ray
    from tagseg.errors import TagsegError

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("scene00.png", "scene01.png", "corrupt.png"):
        shutil.copy(images / name, folder / name)
    report = segment_with_ray([f"file://{folder}/"], tmp_path / "uri", config=config, workers=1)
    assert {(o.name, o.status) for o in report.outcomes} == {("scene00", "done"), ("scene01", "done"), ("corrupt", "failed")}
    assert f"file://{folder}/corrupt.png" in report.failed[0].reason
    for name in ("scene00", "scene01"):
        ours, theirs = (json.loads((where / f"{name}.json").read_text()) for where in (tmp_path / "uri", local_run[0]))
        assert ours["image"].pop("path") == f"file://{folder}/{name}.png"
        theirs["image"].pop("path")
        _assert_close(ours, theirs, name)

    dataset = ray_runtime.data.read_binary_files(str(folder / "scene01.png"), include_paths=True)
    [row] = segment_with_ray(dataset, tmp_path / "dataset", config=config, workers=1).outcomes
    assert row.status == "done"
    _assert_same_picture(tmp_path / "dataset" / f"{row.name}.labels.png", local_run[0] / "scene01.labels.png")

    missing = config.replace(feature_model=str(tmp_path / "no-dino"), clip_model=str(tmp_path / "no-clip"))
    with pytest.raises(TagsegError, match="no-dino"):
        segment_with_ray([folder / "scene00.png"], tmp_path / "missing", config=missing, workers=1)
