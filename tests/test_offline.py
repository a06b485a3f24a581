"""Air-gapped machines: pack a run's models and embedded vocabulary, unpack them elsewhere, segment with no network."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from tagseg.cli import app
from tagseg.testing import save_random_clip, save_random_dinov2
from tagseg.toy import toy_scene
from test_cli_models import fake_cache

runner = CliRunner()
FEATURES, CLIP = "tagseg-tests/tiny-dinov2", "tagseg-tests/tiny-clip"
FLAGS = ["--feature-model", FEATURES, "--clip-model", CLIP, "--image-size", "56", "--no-crf", "-k", "3", "--device", "cpu"]


def _cache_of(folder: Path, hub: Path, repo: str) -> None:
    fake_cache(hub, repo, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})


def test_pack_unpack_then_segment_without_network(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    from tagseg.database import default as default_module

    online = tmp_path / "online"
    _cache_of(save_random_dinov2(tmp_path / "dinov2"), online / "hub", FEATURES)
    _cache_of(save_random_clip(tmp_path / "clip"), online / "hub", CLIP)
    vocabulary = tmp_path / "vocabulary.txt.gz"
    vocabulary.write_bytes(gzip.compress(b"cat\ndog\nred car\nsailing boat\n"))
    monkeypatch.setattr(default_module, "default_vocabulary_path", lambda *file: vocabulary)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(online / "hub"))
    monkeypatch.setenv("TAGSEG_CACHE", str(online / "tagseg"))
    archive = tmp_path / "models.tar"
    packed = runner.invoke(app, ["models", "pack", str(archive), *FLAGS[:4]])
    assert packed.exit_code == 0, packed.output
    assert FEATURES in packed.output and CLIP in packed.output and archive.is_file()

    offline = tmp_path / "offline"  # a fresh machine: empty caches
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(offline / "hf" / "hub"))
    monkeypatch.setenv("TAGSEG_CACHE", str(offline / "tagseg"))
    before = runner.invoke(app, ["models", "check", *FLAGS[:4]])
    assert before.exit_code == 1 and "missing model tagseg-tests/tiny-clip" in " ".join(before.output.split())
    unpacked = runner.invoke(app, ["models", "unpack", str(archive)])
    assert unpacked.exit_code == 0, unpacked.output
    after = runner.invoke(app, ["models", "check", *FLAGS[:4]])
    assert after.exit_code == 0 and "missing" not in after.output.split("extra")[0], after.output

    photo = tmp_path / "scene.png"
    Image.fromarray(toy_scene(1, size=(64, 64))[0]).save(photo)
    env = {**os.environ, "HF_HOME": str(offline / "hf"), "TAGSEG_CACHE": str(offline / "tagseg"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # any hub request or probe would fail
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    # the small vocabulary the archive's database was embedded from (its cache key), and a hub probe fails the run
    code = ("import sys, pathlib; import tagseg.database.default as d; vocabulary = pathlib.Path(sys.argv.pop(1)); "
            "d.default_vocabulary_path = lambda *f: vocabulary; "
            "import tagseg.backbones.hub as h; h._hub_unreachable = lambda: (_ for _ in ()).throw(AssertionError('hub probed')); "
            "from tagseg.cli import main; sys.argv[0] = 'tagseg'; main()")
    done = subprocess.run(
        [sys.executable, "-c", code, str(vocabulary), "segment", str(photo), "--out", str(tmp_path / "out"), *FLAGS],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert {s["label"] for s in record["segments"]} <= {"cat", "dog", "red", "car", "sailing", "boat", "object"}
