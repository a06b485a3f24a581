"""The Ray engine under faults, on a local Ray runtime: no image can stall a run, no killed write looks finished.

Every Ray worker process runs a set-up hook that registers a test backend (``dying:``, the toy
features, except that it ends its own process on a plain magenta image, as a decoder crash or an
out-of-memory image would) and wraps ``os.replace`` so that chosen files kill their writer once,
after the temporary file is written and before it is renamed into place. The wrapper also logs
every file renamed into place, so that the tests see how many times each file was written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tagseg.batch import BatchListener
from tagseg.config import preset
from tagseg.exports import read_result
from tagseg.output_layout import FAILURES_FILE
from tagseg.toy import toy_scene

pytestmark = pytest.mark.ray

SCENES = 6
DYING = "dying:"
CONFIG = preset("toy", image_size=72, feature_model=DYING)
POISON = "poison"
KILLED_FILES = ("scene01.overlay.png", "scene02.labels.png", "scene03.json", "export/embeddings/scene04.npy")
"""The files whose first write kills its worker: one of each kind a worker writes."""
EXPORTS = ["embeddings", "coco"]


def _worker_set_up(killed: frozenset[str], markers: Path, log: Path) -> Callable[[], None]:
    """The set-up hook of every Ray worker process (see the module's docstring); it imports no torch."""

    def set_up() -> None:
        from tagseg.builder import Backend, register_backend

        register_backend(DYING, Backend(features=lambda spec, config: _dying_features()), replace=True)
        rename = os.replace

        def replace(source: str | os.PathLike[str], target: str | os.PathLike[str], **kwargs: object) -> None:
            target = os.fspath(target)
            marker = markers / target.replace("/", "_")
            if target in killed and not marker.exists():
                marker.touch()
                os._exit(1)  # killed while writing: the temporary file is left behind
            rename(source, target, **kwargs)
            with log.open("a", encoding="utf-8") as handle:
                handle.write(target + "\n")

        os.replace = replace  # type: ignore[assignment]

    return set_up


def _dying_features() -> object:
    """The toy patch features, except that a plain magenta image ends the process (as a decoder crash would)."""
    import torch

    from tagseg.toy import ToyPatchFeatures

    class DyingFeatures(ToyPatchFeatures):
        def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
            means = pixels.float().mean(dim=(2, 3))
            if ((means[:, 0] > 0.98) & (means[:, 1] < 0.02) & (means[:, 2] > 0.98)).any():
                os._exit(1)
            return super().__call__(pixels)

    return DyingFeatures()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six toy scenes and the poison (plain magenta) in one folder; the output, marker and log places."""
    root = tmp_path_factory.mktemp("faults")
    folders = {name: root / name for name in ("images", "out", "markers")} | {"log": root / "renamed.txt"}
    for name in ("images", "markers"):
        folders[name].mkdir()
    for seed in range(SCENES):
        Image.fromarray(toy_scene(seed, size=(72, 96))[0]).save(folders["images"] / f"scene{seed:02d}.png")
    Image.new("RGB", (96, 72), (255, 0, 255)).save(folders["images"] / f"{POISON}.png")
    return folders


@pytest.fixture(scope="module")
def ray_runtime(folders: dict[str, Path]):
    """A local Ray runtime (two CPUs) whose workers run the set-up hook."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook's code travels to the workers
    killed = frozenset(str(folders["out"] / name) for name in KILLED_FILES)
    hook = _worker_set_up(killed, folders["markers"], folders["log"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"worker_process_setup_hook": hook})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def faulty_run(ray_runtime, folders: dict[str, Path]):
    """One run over the folder: the poison kills every worker it meets, the killed files kill theirs once."""
    from tagseg.engines.ray import segment_with_ray

    return segment_with_ray([folders["images"]], folders["out"], config=CONFIG, exports=EXPORTS, workers=2, batch_size=1)


def _renamed(out: Path) -> list[str]:
    """The files renamed into place below ``out`` by the workers, relative to it, in order."""
    log = out.parent / "renamed.txt"
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [Path(line).relative_to(out).as_posix() for line in lines if line.startswith(f"{out}/")]


class _Recorder(BatchListener):
    def __init__(self) -> None:
        self.loaded = False

    def loading_models(self) -> None:
        self.loaded = True


NAMES = [f"scene{seed:02d}" for seed in range(SCENES)]


def test_an_image_that_kills_every_worker_becomes_a_failed_row_and_the_run_goes_on(faulty_run, folders):
    from tagseg.engines.ray import MANIFEST_FILE, TRIES_PER_IMAGE

    out, poison = folders["out"], folders["images"] / f"{POISON}.png"
    reason = f"the worker died while segmenting this image, {TRIES_PER_IMAGE} tries"
    assert [(o.name, o.status) for o in faulty_run.outcomes] == [(POISON, "failed")] + [(name, "done") for name in NAMES]
    assert (faulty_run.failed[0].path, faulty_run.failed[0].reason) == (poison, reason)
    manifest = {row["name"]: row for row in pq.read_table(out / MANIFEST_FILE).to_pylist()}
    assert (manifest[POISON]["status"], manifest[POISON]["reason"]) == ("failed", reason)
    assert {manifest[name]["status"] for name in NAMES} == {"done"}
    [line] = (out / FAILURES_FILE).read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {"path": str(poison), "name": POISON, "reason": reason}
    renamed = _renamed(out)
    assert [renamed.count(f"{name}.json") for name in NAMES] == [1] * SCENES  # nothing finished was segmented again
    assert not any(POISON in f for f in renamed)
    coco = json.loads((out / "results.coco.json").read_text(encoding="utf-8"))
    assert [image["file_name"] for image in coco["images"]] == [f"{name}.png" for name in NAMES]


def test_a_worker_killed_while_writing_any_file_leaves_nothing_a_later_run_takes_as_finished(faulty_run, folders):
    from tagseg.engines.ray import MANIFEST_FILE, segment_with_ray

    out = folders["out"]
    assert sorted(p.name for p in folders["markers"].iterdir()) == sorted(str(out / f).replace("/", "_") for f in KILLED_FILES)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    per_image = {f"{n}{s}" for n in NAMES for s in (".json", ".labels.png", ".overlay.png")}
    embeddings = {f"export/embeddings/{n}.npy" for n in NAMES}
    run_files = {MANIFEST_FILE, FAILURES_FILE, "results.coco.json", "export/categories.json", "export/coco/instances.json"}
    assert files == per_image | embeddings | run_files  # no temporary file left, nothing missing
    for name in NAMES:
        result, _ = read_result(out / f"{name}.json")
        labels = Image.open(out / f"{name}.labels.png")
        assert json.loads(labels.info["tagseg:labels"]) == result.labels
        assert np.array_equal(np.asarray(labels), result.cluster_map)
        assert Image.open(out / f"{name}.overlay.png").size == (96, 72)
        assert np.load(out / "export" / "embeddings" / f"{name}.npy").shape[0] == len(result.segments)
    renamed = _renamed(out)
    assert [renamed.count(killed) for killed in KILLED_FILES] == [1] * len(KILLED_FILES)  # written whole, once

    before = {f: (out / f).stat().st_mtime_ns for f in files}
    rerun = _Recorder()
    scenes = [folders["images"] / f"{name}.png" for name in NAMES]
    again = segment_with_ray(scenes, out, config=CONFIG, exports=EXPORTS, workers=2, batch_size=1, listener=rerun)
    assert [o.status for o in again.outcomes] == ["skipped"] * SCENES and not rerun.loaded
    assert {f for f in files if not (out / f).exists() or (out / f).stat().st_mtime_ns != before[f]} <= run_files
