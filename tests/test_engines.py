"""The engine registry and the output layout every engine shares, through the command line and from Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tagseg import engines
from tagseg.batch import segment_files
from tagseg.cli import app
from tagseg.config import preset
from tagseg.engines.local import LocalEngine
from tagseg.errors import ConfigError
from tagseg.exports.writer import image_root_of, relative_file_name
from tagseg.output_layout import plan_inputs
from tagseg.toy import toy_captions, toy_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOY = ["--preset", "toy", "--image-size", "72"]


def _scene(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(toy_scene(seed, size=(72, 96))[0]).save(path)
    return path


class _Recording:
    """The local engine, recording what the command line asked of it."""

    def __init__(self, calls: list, workers: engines.WorkerOptions) -> None:
        self.engine, self.calls = LocalEngine(workers), calls

    def segment(self, inputs, out_dir, **options):
        self.calls.append(("segment", options["batch_size"]))
        return self.engine.segment(inputs, out_dir, **options)

    def build_database(self, path, inputs, text_model, **options):
        self.calls.append(("build_database", options["batch_size"]))
        return self.engine.build_database(path, inputs, text_model, **options)


def test_segment_and_db_build_run_through_the_engine_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setitem(engines.ENGINES, "local", lambda workers: _Recording(calls, workers))
    image = _scene(tmp_path / "scene.png", 0)
    runner = CliRunner()
    done = runner.invoke(app, ["segment", str(image), "--out", str(tmp_path / "out"), "--batch-size", "3", *TOY])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "out" / "scene.json").is_file()
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(toy_captions()) + "\n", encoding="utf-8")
    built = runner.invoke(app, ["db", "build", str(tmp_path / "db"), str(captions), "--text-model", "toy", "--batch-size", "8"])
    assert built.exit_code == 0, built.output
    assert calls == [("segment", 3), ("build_database", 8)]
    assert f"Embedded {len(toy_captions())} texts" in built.output and "1 worker(s) (local engine)" in built.output


def test_the_local_engine_refuses_worker_options_instead_of_ignoring_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--engine ray"):
        engines.open_engine("local", engines.WorkerOptions(workers=4))
    with pytest.raises(ConfigError, match="Unknown engine 'spark'"):
        engines.open_engine("spark")
    image = _scene(tmp_path / "scene.png", 0)
    refused = CliRunner().invoke(app, ["segment", str(image), "--out", str(tmp_path / "out"), "--workers", "2", *TOY])
    assert refused.exit_code == 1 and "--engine ray" in refused.output
    assert not (tmp_path / "out" / "scene.json").exists()


def test_results_and_export_name_images_alike_relative_to_the_input_folder_or_image_root(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    inputs = [_scene(photos / "a" / "one.png", 0), _scene(photos / "b" / "two.png", 1)]  # absolute paths, one by one
    runner = CliRunner()

    def file_names(path: Path) -> list[str]:
        return [image["file_name"] for image in json.loads(path.read_text(encoding="utf-8"))["images"]]

    out = tmp_path / "out"
    assert runner.invoke(app, ["segment", *map(str, inputs), "--out", str(out), *TOY]).exit_code == 0
    assert runner.invoke(app, ["export", str(out), "--formats", "coco"]).exit_code == 0
    assert file_names(out / "results.coco.json") == file_names(out / "export" / "coco" / "instances.json") == ["a/one.png", "b/two.png"]
    assert json.loads((out / "results.coco.json").read_text(encoding="utf-8"))["info"]["image_root"] == str(photos)

    rooted = tmp_path / "rooted"
    root = ["--image-root", str(tmp_path)]
    assert runner.invoke(app, ["segment", *map(str, inputs), "--out", str(rooted), "--export", "coco", *root, *TOY]).exit_code == 0
    assert runner.invoke(app, ["export", str(rooted), "--out", str(tmp_path / "again"), "--formats", "coco", *root]).exit_code == 0
    expected = ["photos/a/one.png", "photos/b/two.png"]
    assert file_names(rooted / "results.coco.json") == file_names(rooted / "export" / "coco" / "instances.json") == expected
    assert file_names(tmp_path / "again" / "coco" / "instances.json") == expected


def test_uris_share_a_root_by_scheme_and_host() -> None:
    paths = ["s3://bucket/photos/a/one.png", "s3://bucket/photos/b/two.png"]
    root = image_root_of(paths)
    assert root == "s3://bucket/photos"
    assert [relative_file_name({"file_name": p}, p, root)["file_name"] for p in paths] == ["a/one.png", "b/two.png"]
    assert image_root_of(["s3://bucket/one.png", "/local/two.png"]) is None  # no folder holds both
    assert image_root_of(["gs://one/a.png", "gs://two/b.png"]) is None


def test_one_collision_rule_for_local_files_and_uris(tmp_path: Path) -> None:
    first, second = _scene(tmp_path / "a" / "x.png", 0), _scene(tmp_path / "b" / "x.jpg", 1)
    uri = f"file://{tmp_path}/b/x.jpg"
    jobs, failures = plan_inputs([first, second, uri, tmp_path / "missing.png"], tmp_path / "out")
    assert [f.reason for f in failures] == [f"{tmp_path / 'missing.png'}: no such file or folder"]
    names = [job.name for job in jobs]
    assert [job.path for job in jobs] == [first, second, uri]
    assert len(set(names)) == 3 and all(name.startswith("x-") and len(name) == 10 for name in names)
    again, _ = plan_inputs([uri, second], tmp_path / "out")  # a name depends on the image, not on the order
    assert {job.name for job in again} == set(names[1:])


def test_a_missing_embeddings_file_means_the_image_is_not_finished(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for seed in range(2):
        _scene(photos / f"scene{seed}.png", seed)
    out = tmp_path / "out"
    config = preset("toy", image_size=72)
    assert segment_files([photos], out, config=config, exports=["embeddings"]).ok
    embeddings = out / "export" / "embeddings"
    first = np.load(embeddings / "scene0.npy")
    (embeddings / "scene0.npy").unlink()  # as if the run was killed while writing it
    again = segment_files([photos], out, config=config, exports=["embeddings"])
    assert [(o.name, o.status) for o in again.outcomes] == [("scene0", "done"), ("scene1", "skipped")]
    assert np.load(embeddings / "scene0.npy").shape == first.shape and (embeddings / "scene1.npy").is_file()


def test_the_ray_engine_refuses_run_files_it_could_not_write_before_starting(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from tagseg.engines.ray import segment_with_ray

    image = _scene(tmp_path / "scene.png", 0)
    with pytest.raises(ConfigError, match="add json to the formats"):  # results.coco.json comes from the JSON files
        segment_with_ray([image], tmp_path / "out", config=preset("toy"), formats=["overlay", "coco"])
    assert list((tmp_path / "out").iterdir()) == []
