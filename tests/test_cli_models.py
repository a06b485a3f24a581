"""``tagseg models`` offline, and one run with tiny random real-architecture models and a real database."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from tagseg.result import segmentation_schema
from tagseg.cli import app

runner = CliRunner()
MODEL = "facebook/dinov2-small"


def fake_cache(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it (blobs named by their hash)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    for name, data in files.items():
        if name.endswith(".safetensors"):
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        blob = folder / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / revision / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../../blobs") / digest)
    return folder


def test_list_offline_shows_what_the_cache_holds(tmp_path: Path) -> None:
    fake_cache(tmp_path, MODEL, {"config.json": b"{}", "model.safetensors": b"weights"})
    result = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ") and "/" in line}
    assert "ready" in lines[MODEL] and "fast" in lines[MODEL]
    assert "missing" in lines["facebook/dinov2-base"] and "paper" in lines["facebook/dinov2-base"]
    assert "ready" in runner.invoke(app, ["models", "list", "-p", "toy", "--cache-dir", str(tmp_path)]).output


def test_verify_checks_checksums_and_says_how_to_fix(tmp_path: Path) -> None:
    folder = fake_cache(tmp_path, MODEL, {"config.json": b"{}", "model.safetensors": b"weights"})
    good = runner.invoke(app, ["models", "verify", MODEL, "--cache-dir", str(tmp_path)])
    assert good.exit_code == 0, good.output
    next((folder / "blobs").glob("?" * 64)).write_bytes(b"damaged")
    bad = runner.invoke(app, ["models", "verify", MODEL, "--cache-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "corrupt cached file(s): model.safetensors" in bad.output
    missing = runner.invoke(app, ["models", "verify", "--preset", "paper", "--cache-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "tagseg models download facebook/dinov2-base" in missing.output


def test_download_offline_fails_cleanly() -> None:
    result = runner.invoke(app, ["models", "download", "tagseg-test/not-a-model"])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "tagseg-test/not-a-model" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_segment_with_tiny_random_models_and_a_built_database(tmp_path: Path) -> None:
    from tagseg.testing import TINY_VOCABULARY_WORDS, save_random_clip, save_random_dinov2

    dino = save_random_dinov2(tmp_path / "dino", "tiny")
    clip = save_random_clip(tmp_path / "clip", "tiny")
    texts = tmp_path / "captions.txt"
    words = TINY_VOCABULARY_WORDS
    texts.write_text("\n".join(f"a photo of a {a} and a {b}" for a, b in zip(words, words[3:] + words[:3])) + "\n")
    built = runner.invoke(app, ["db", "build", str(tmp_path / "db"), str(texts), "--text-model", str(clip)])
    assert built.exit_code == 0, built.output
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).resize((150, 100)).save(photo)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["segment", str(photo), "--out", str(out), "--feature-model", str(dino), "--clip-model", str(clip),
         "--database", str(tmp_path / "db"), "--image-size", "112", "-k", "4", "--device", "cpu", "--no-crf"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "chelsea.json").read_text())
    jsonschema.validate(record, segmentation_schema(), cls=jsonschema.Draft202012Validator)
    assert record["models"]["features"] == str(dino) and record["settings"]["database"] == str(tmp_path / "db")
    assert Image.open(out / "chelsea.overlay.png").size == (150, 100)
    labels = np.asarray(Image.open(out / "chelsea.labels.png"))
    assert set(np.unique(labels)) == {s["id"] for s in record["segments"]}
