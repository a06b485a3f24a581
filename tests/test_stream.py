"""The streamed runner: forwards ahead in a thread, batched forwards, same files, order and resume as one at a time."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagseg.batch import segment_files
from tagseg.image import load_image
from tagseg.output_layout import OutputLayout, plan_inputs
from tagseg.pipeline import TAG
from tagseg.stream import segment_stream
from tagseg.toy import toy_scene

FORMATS = frozenset({"overlay", "labels", "json"})


@pytest.fixture(scope="module")
def tag() -> TAG:
    return TAG.from_pretrained("toy")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven toy scenes (two sizes, one in a sub-folder) and one file that is no image, sorted between them."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for seed in range(6):
        rgb = toy_scene(seed)[0]
        if seed % 2:
            rgb = np.array(Image.fromarray(rgb).resize((160, 96)))
        Image.fromarray(rgb).save(root / f"scene{seed}.png")
    Image.fromarray(toy_scene(6)[0]).save(root / "sub" / "scene6.png")
    (root / "scene3b.png").write_bytes(b"not a png")
    return root


def _files(out: Path) -> dict[str, bytes]:
    """Every per-image file's bytes; JSON without its timings, which differ from run to run."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != "results.coco.json":
            data = path.read_bytes()
            if path.suffix == ".json":
                record = json.loads(data)
                record.pop("timings")
                data = json.dumps(record).encode()
            files[path.relative_to(out).as_posix()] = data
    return files


def _one_at_a_time(tag: TAG, folder: Path, out: Path) -> list[str]:
    """The reference: each image decoded, segmented and written alone."""
    layout = OutputLayout.create(out, FORMATS)
    statuses = []
    jobs, _ = plan_inputs([folder], out)
    for job in jobs:
        try:
            rgb = load_image(job.path)
            layout.write_image(rgb, tag(rgb), job.path, job.name, 0.5)
            statuses.append("done")
        except Exception:  # noqa: BLE001
            statuses.append("failed")
    return statuses


@pytest.mark.parametrize("batch_size", [1, 3])
def test_streamed_folder_run_writes_the_same_files_in_the_same_order(
    tag: TAG, folder: Path, tmp_path: Path, batch_size: int
) -> None:
    expected_statuses = _one_at_a_time(tag, folder, tmp_path / "reference")
    report = segment_files([folder], tmp_path / "streamed", tag=tag, formats=FORMATS, batch_size=batch_size)
    assert [o.status for o in report.outcomes] == expected_statuses
    assert [o.path.name for o in report.outcomes] == [
        "scene0.png", "scene1.png", "scene2.png", "scene3.png", "scene3b.png", "scene4.png", "scene5.png", "scene6.png"
    ]
    reference = _files(tmp_path / "reference")
    assert len(reference) == 7 * 3
    streamed = _files(tmp_path / "streamed")
    failures = streamed.pop("failures.jsonl").decode()  # the run's list of failed inputs: the non-image only
    assert [json.loads(line)["name"] for line in failures.splitlines()] == ["scene3b"]
    assert streamed == reference


def test_resume_skips_finished_images_and_redoes_only_the_missing_one(tag: TAG, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    segment_files([folder], out, tag=tag, formats=FORMATS, batch_size=2)
    first = _files(out)
    (out / "scene4.json").unlink()
    report = segment_files([folder], out, tag=tag, formats=FORMATS, batch_size=2)
    assert [(o.path.name, o.status) for o in report.outcomes if o.status != "skipped"] == [
        ("scene3b.png", "failed"), ("scene4.png", "done")
    ]
    assert len(report.skipped) == 6
    assert _files(out) == first


class _FailingOn:
    """Patch features that raise for images whose top-left corner is white, whatever the batch."""

    def __init__(self, features) -> None:  # type: ignore[no-untyped-def]
        self.inner = features
        self.patch_size = features.patch_size
        self.model_id = features.model_id
        self.calls: list[int] = []

    def __call__(self, pixels):  # type: ignore[no-untyped-def]
        self.calls.append(len(pixels))
        if bool((pixels[:, :, 0, 0] > 0.999).all(dim=1).any()):
            raise RuntimeError("white corner")
        return self.inner(pixels)


def test_a_failing_image_in_a_batch_fails_alone(tag: TAG) -> None:
    features = _FailingOn(tag.features)
    failing = TAG(features, tag.embedder, tag.text_encoder, tag.database, tag.config)
    images = [toy_scene(seed)[0] for seed in range(3)]
    images[1] = images[1].copy()
    images[1][:24, :24] = 255
    streamed = list(segment_stream(failing, images, load=np.asarray, batch_size=3))
    assert [s.error is None for s in streamed] == [True, False, True]
    assert "white corner" in str(streamed[1].error)
    assert features.calls == [3, 1, 1, 1]  # the batch, then each image alone
    for image, item in zip(images[::2], streamed[::2]):
        assert item.result is not None
        assert np.array_equal(item.result.label_map, tag(image).label_map)


def test_the_next_image_is_forwarded_while_the_current_one_finishes(tag: TAG) -> None:
    forwarded_second = threading.Event()

    class Watching(TAG):
        forwards = 0

        def forward(self, images):  # type: ignore[no-untyped-def]
            Watching.forwards += 1
            if Watching.forwards == 2:
                forwarded_second.set()
            return super().forward(images)

        def finish(self, forwarded, **overrides):  # type: ignore[no-untyped-def]
            if Watching.forwards == 1:  # finishing the first image: the second must get forwarded meanwhile
                assert forwarded_second.wait(timeout=300)  # ends when it is set: only a hang waits this long
            return super().finish(forwarded, **overrides)

    watching = Watching(tag.features, tag.embedder, tag.text_encoder, tag.database, tag.config)
    results = [s.result for s in segment_stream(watching, [toy_scene(seed)[0] for seed in range(3)], load=np.asarray)]
    assert all(result is not None for result in results)


def test_ahead_zero_runs_in_turn_and_closing_early_stops_the_thread(tag: TAG) -> None:
    images = [toy_scene(seed)[0] for seed in range(4)]
    in_turn = [s.result.labels for s in segment_stream(tag, images, load=np.asarray, ahead=0)]  # type: ignore[union-attr]
    assert in_turn == [tag(image).labels for image in images]
    before = threading.active_count()
    stream = segment_stream(tag, images, load=np.asarray)
    next(stream)
    stream.close()
    assert threading.active_count() <= before
    with pytest.raises(ValueError, match="batch_size"):
        next(segment_stream(tag, images, batch_size=0))
