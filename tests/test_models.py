"""Model sources: local directories, the Hugging Face cache offline, clear errors, random test models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from tagseg.backbones.clip import CLIPTextEncoder, GEMDenseCLIP
from tagseg.errors import ModelNotAvailableError
from tagseg.backbones.dinov2 import Dinov2Features
from tagseg.backbones.hub import download_model, load_pretrained, read_model_json, resolve_device
from tagseg.testing import TINY_VOCABULARY_WORDS, save_random_clip, save_random_dinov2

UNKNOWN_ID = "tagseg-tests/no-such-model"


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "load",
    [
        lambda source: Dinov2Features.from_pretrained(source),
        lambda source: GEMDenseCLIP.from_pretrained(source),
        lambda source: CLIPTextEncoder.from_pretrained(source),
        lambda source: load_pretrained(AutoConfig, source),
    ],
    ids=["dinov2", "gem", "text", "config"],
)
def test_unknown_id_offline_raises_clear_error(load) -> None:
    with pytest.raises(ModelNotAvailableError) as caught:
        load(UNKNOWN_ID)
    message = str(caught.value)
    assert UNKNOWN_ID in message
    assert "download" in message and "directory" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_download_offline_raises_clear_error() -> None:
    with pytest.raises(ModelNotAvailableError, match=UNKNOWN_ID):
        download_model(UNKNOWN_ID)


def test_empty_missing_and_weightless_directories_raise(tmp_path: Path, dinov2_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    shutil.copy(dinov2_dir / "config.json", weightless / "config.json")
    for directory in (empty, tmp_path / "missing", weightless):
        with pytest.raises(ModelNotAvailableError, match=str(directory)):
            Dinov2Features.from_pretrained(directory)


def test_wrong_kind_of_model_raises(clip_dir: Path, dinov2_dir: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="not DINOv2"):
        Dinov2Features.from_pretrained(clip_dir)
    with pytest.raises(ModelNotAvailableError, match="not CLIP"):
        GEMDenseCLIP.from_pretrained(dinov2_dir)
    with pytest.raises(ModelNotAvailableError, match="does not hold the weights"):
        load_pretrained(CLIPVisionModelWithProjection, dinov2_dir)


def test_read_model_json(clip_dir: Path) -> None:
    config = read_model_json(clip_dir, "preprocessor_config.json")
    assert config is not None and len(config["image_mean"]) == 3
    assert read_model_json(clip_dir, "no_such_file.json") is None
    assert read_model_json(str(clip_dir), "config.json") == json.loads((clip_dir / "config.json").read_text())


def test_both_towers_load_from_a_full_clip_checkpoint(clip_dir: Path) -> None:
    full = CLIPModel.from_pretrained(clip_dir)
    vision = load_pretrained(CLIPVisionModelWithProjection, clip_dir)
    text = load_pretrained(CLIPTextModelWithProjection, clip_dir)
    torch.testing.assert_close(vision.visual_projection.weight, full.visual_projection.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        vision.vision_model.encoder.layers[-1].mlp.fc2.weight,
        full.vision_model.encoder.layers[-1].mlp.fc2.weight,
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(text.text_projection.weight, full.text_projection.weight, rtol=0, atol=0)


def test_random_models_are_deterministic(tmp_path: Path, clip_dir: Path) -> None:
    again = save_random_clip(tmp_path / "again")
    first, second = load_file(clip_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    different = save_random_clip(tmp_path / "other-seed", seed=1)
    assert not torch.equal(load_file(different / "model.safetensors")["visual_projection.weight"],
                           first["visual_projection.weight"])


def test_tiny_tokenizer_is_a_valid_clip_bpe(clip_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    ids = tokenizer("a photo of a cat")["input_ids"]
    assert len(ids) == 7  # start, five words as single tokens, end
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    assert len(tokenizer("zebra ünïcode 123!")["input_ids"]) > 4  # unknown words fall back to byte symbols
    assert set(TINY_VOCABULARY_WORDS) >= {"cat", "dog", "person"}
    assert tokenizer.eos_token_id == max(tokenizer.get_vocab().values())


def test_random_dinov2_sizes_and_registers(tmp_path: Path) -> None:
    plain = AutoConfig.from_pretrained(save_random_dinov2(tmp_path / "plain"))
    registers = AutoConfig.from_pretrained(save_random_dinov2(tmp_path / "registers", registers=True))
    assert (plain.model_type, plain.hidden_size, plain.patch_size) == ("dinov2", 32, 14)
    assert (registers.model_type, registers.num_register_tokens) == ("dinov2_with_registers", 4)
    with pytest.raises(ValueError, match="unknown size"):
        save_random_dinov2(tmp_path / "bad", size="huge")  # type: ignore[arg-type]


def test_hub_ids_are_read_from_the_cache_before_the_network_is_asked() -> None:
    from tagseg.backbones.hub import _cache_first

    calls: list[dict] = []

    class Loader:
        cached = False

        @classmethod
        def from_pretrained(cls, location: str, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs)
            if kwargs.get("local_files_only") and not cls.cached:
                raise OSError("not in the cache")
            return location

    assert _cache_first(Loader, "owner/model", local=False) == "owner/model"
    assert calls == [{"local_files_only": True}, {}]  # a miss, then the hub
    calls.clear()
    Loader.cached = True
    _cache_first(Loader, "owner/model", local=False)
    assert calls == [{"local_files_only": True}]  # a hit never touches the network
    calls.clear()
    _cache_first(Loader, "/models/dinov2", local=True)
    assert calls == [{}]


def test_unreachable_hub_fails_at_once_without_asking_it(monkeypatch) -> None:
    """A closed loopback port stands for a hub that cannot be reached (no network is tried)."""
    from huggingface_hub import constants

    from tagseg.backbones.hub import HUB_PROBE_TIMEOUT, _cache_first

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    calls: list[dict] = []

    class Loader:
        @classmethod
        def from_pretrained(cls, location: str, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs)
            raise OSError("not in the cache")

    started = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match=r"hub at http://127\.0\.0\.1:9 cannot be reached"):
        _cache_first(Loader, UNKNOWN_ID, local=False)
    assert calls == [{"local_files_only": True}]  # the hub client was never asked
    with pytest.raises(ModelNotAvailableError, match="cannot be reached") as caught:
        load_pretrained(AutoConfig, UNKNOWN_ID)
    assert str(caught.value).count("is not available") == 1 and "tagseg models download" in str(caught.value)
    assert time.perf_counter() - started < HUB_PROBE_TIMEOUT + 2


def test_segment_with_an_unreachable_hub_exits_in_seconds(tmp_path: Path) -> None:
    """The whole command, interpreter start included: about 30 s of hub retries before."""
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from tagseg.cli import main; main()", "segment", str(image), "--out", str(tmp_path / "out"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be loaded" in done.stderr and "cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr and "thrown while requesting" not in done.stderr
    assert seconds < 20, f"{seconds:.1f} s"


def test_every_missing_model_of_a_run_is_named_in_one_error_before_any_loads(monkeypatch, tmp_path: Path, dinov2_dir: Path) -> None:
    """Features, CLIP and SAM (when chosen) missing offline: one message, one command that fetches them all."""
    from tagseg import builder
    from tagseg.config import preset

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(builder, "build_features", lambda config: pytest.fail("a model was loaded"))
    config = preset("paper").replace(feature_model="tagseg-tests/features", clip_model="tagseg-tests/clip", segmenter="sam",
                                     sam_model="tagseg-tests/sam")
    with pytest.raises(ModelNotAvailableError) as caught:
        builder.build(config)
    message = str(caught.value)
    assert "tagseg models download tagseg-tests/features tagseg-tests/clip tagseg-tests/sam" in message
    assert "HF_HUB_OFFLINE" in message
    with pytest.raises(ModelNotAvailableError) as caught:  # a missing folder is named beside a missing id
        builder.build(config.replace(feature_model=str(tmp_path / "no-such-folder"), segmenter="kmeans"))
    message = str(caught.value)
    assert "no-such-folder: no such directory" in message and "tagseg models download tagseg-tests/clip`" in message
    builder.check_models(config.replace(feature_model=str(dinov2_dir), clip_model="toy", segmenter="kmeans"))  # all present
