"""The batch runner behind `tagseg segment`, called from Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tagseg.batch import FAILURES_FILE, BatchListener, segment_files
from tagseg.config import preset
from tagseg.errors import ConfigError
from tagseg.toy import toy_scene


class Recorder(BatchListener):
    def __init__(self) -> None:
        self.events: list[str] = []

    def loading_models(self) -> None:
        self.events.append("loading models")


@pytest.fixture
def scene_file(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(toy_scene(0)[0]).save(path)
    return path


def test_outcomes_report_outputs_and_names(tmp_path: Path, scene_file: Path) -> None:
    report = segment_files([scene_file], tmp_path / "out", config=preset("toy"))
    [done] = report.outcomes
    assert done.status == "done" and done.reason is None
    assert all(isinstance(label, str) for label in done.labels) and done.labels
    assert sorted(p.name for p in done.outputs) == ["scene.json", "scene.labels.png", "scene.overlay.png"]
    assert all(p.is_file() for p in done.outputs)
    [skipped] = segment_files([scene_file], tmp_path / "out", config=preset("toy")).outcomes
    assert skipped.status == "skipped" and skipped.labels == [] and skipped.outputs == done.outputs


def test_a_bad_export_format_fails_before_models_load_and_leaves_nothing(tmp_path: Path, scene_file: Path) -> None:
    recorder = Recorder()
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="cocoo"):
        segment_files([scene_file], out, config=preset("toy"), exports=["cocoo"], listener=recorder)
    assert recorder.events == []
    assert list(out.iterdir()) == []


def test_failures_are_listed_in_the_output_folder_and_cleared_once_fixed(tmp_path: Path, scene_file: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    out = tmp_path / "out"
    inputs = [scene_file, broken, tmp_path / "missing.png"]
    report = segment_files(inputs, out, config=preset("toy"))
    rows = [json.loads(line) for line in (out / FAILURES_FILE).read_text(encoding="utf-8").splitlines()]
    assert [(row["path"], row["name"]) for row in rows] == [(str(tmp_path / "missing.png"), ""), (str(broken), "broken")]
    assert [row["reason"] for row in rows] == [o.reason for o in report.failed]
    assert "no such file" in rows[0]["reason"] and "broken.jpg" in rows[1]["reason"]
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.partial*"))
    Image.fromarray(toy_scene(1)[0]).save(broken, format="JPEG")  # fixed: the resumed run succeeds
    again = segment_files([scene_file, broken], out, config=preset("toy"))
    assert again.ok and [o.status for o in again.outcomes] == ["skipped", "done"]
    assert not (out / FAILURES_FILE).exists()


def test_writing_an_image_again_removes_what_an_interrupted_write_of_it_left(tmp_path: Path, scene_file: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    killed = [out / ".scene.json.0123456789ab.tmp", out / ".scene.overlay.png.ba9876543210.tmp"]  # a worker killed mid-write
    other = out / ".other.json.0123456789ab.tmp"  # another image's: left alone
    for path in (*killed, other):
        path.write_bytes(b"partial")
    [done] = segment_files([scene_file], out, config=preset("toy")).outcomes
    assert done.status == "done"
    assert not any(path.exists() for path in killed) and other.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [other.name]
