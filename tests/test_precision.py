"""dtype="auto", direct loading in the target dtype (tensor by tensor), batched forwards and the device transfer."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import skimage.data
import torch

from tagseg import TAG
from tagseg.result import segmentation_schema
from tagseg.backbones import base
from tagseg.backbones.clip import CLIPTextEncoder, GEMDenseCLIP
from tagseg.backbones.dinov2 import Dinov2Features
from tagseg.config import TAGConfig
from tagseg.database import InMemoryTextDatabase
from tagseg.errors import ConfigError
from tagseg.testing import TINY_VOCABULARY_WORDS, save_random_dinov2

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bfloat16_exactly_where_it_is_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(base, "_cpu_has_bfloat16", lambda: native)
    assert base.resolve_dtype("auto", CPU) == (torch.bfloat16 if native else torch.float32)
    assert base.resolve_dtype("float32", CPU) == torch.float32  # named types never depend on the hardware
    assert base.resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert base.resolve_dtype(torch.float16, CPU) == torch.float16
    assert base.resolve_dtype("auto", torch.device("meta")) == torch.float32


def test_cpu_flags_decide_auto_on_this_machine() -> None:
    flags = Path("/proc/cpuinfo").read_text().split()
    expected = "amx_bf16" in flags or "avx512_bf16" in flags
    assert base.native_bfloat16(CPU) is expected


def test_unknown_dtype_names_are_refused() -> None:
    with pytest.raises(ValueError, match="auto, float32"):
        base.resolve_dtype("float8", CPU)
    with pytest.raises(ConfigError, match="dtype='half'"):
        TAGConfig(dtype="half")
    assert TAGConfig(dtype="auto").dtype == "auto"


@pytest.mark.parametrize("native", [True, False])
def test_backbones_load_their_weights_in_the_resolved_dtype(
    monkeypatch: pytest.MonkeyPatch, clip_dir: Path, dinov2_dir: Path, native: bool
) -> None:
    monkeypatch.setattr(base, "_cpu_has_bfloat16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    backbones = [
        Dinov2Features.from_pretrained(dinov2_dir, dtype="auto"),
        GEMDenseCLIP.from_pretrained(clip_dir, dtype="auto"),
        CLIPTextEncoder.from_pretrained(clip_dir, dtype="auto"),
    ]
    for backbone in backbones:
        assert {parameter.dtype for parameter in backbone.model.parameters()} == {expected}
        assert backbone.dtype == expected
    for backbone in backbones[:2]:
        pixels = torch.rand(1, 3, 4 * backbone.patch_size, 2 * backbone.patch_size)
        assert backbone(pixels).dtype == torch.float32  # outputs stay float32 whatever the compute type


def test_a_bfloat16_load_reads_the_checkpoint_tensor_by_tensor_into_the_same_weights(
    monkeypatch: pytest.MonkeyPatch, clip_dir: Path, dinov2_dir: Path
) -> None:
    read = []
    original = base.tensors_read_one_by_one

    @contextmanager
    def spying(source):  # type: ignore[no-untyped-def]
        with original(source) as state_dict:
            read.append(state_dict is not None)
            yield state_dict

    monkeypatch.setattr(base, "tensors_read_one_by_one", spying)
    for cls, directory in ((Dinov2Features, dinov2_dir), (GEMDenseCLIP, clip_dir), (CLIPTextEncoder, clip_dir)):
        converted = cls.from_pretrained(directory, dtype="bfloat16").model.state_dict()
        full = cls.from_pretrained(directory, dtype="float32").model.state_dict()
        assert converted.keys() == full.keys()
        for key, tensor in full.items():
            expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
            assert torch.equal(converted[key], expected), key
    assert read == [True, True, True]  # float32 loads keep the memory map


PEAK = """
import sys
from pathlib import Path
from tagseg.backbones.dinov2 import Dinov2Features
def peak():
    return next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
before = peak()
Dinov2Features.from_pretrained(sys.argv[1], dtype=sys.argv[2])
print((peak() - before) * 1024)
"""


def test_the_peak_memory_of_a_bfloat16_load_follows_the_converted_model(tmp_path: Path) -> None:
    directory = save_random_dinov2(tmp_path / "dinov2-small", "small")
    checkpoint = (directory / "model.safetensors").stat().st_size
    run = subprocess.run(
        [sys.executable, "-c", PEAK, str(directory), "bfloat16"], capture_output=True, text=True, check=True
    )
    growth = int(run.stdout.split()[-1])
    # the bfloat16 model is half the float32 file; reading the file whole would add all of it on top
    assert growth < 0.8 * checkpoint, (growth, checkpoint)


def test_batched_forwards_equal_one_image_at_a_time(clip_dir: Path, dinov2_dir: Path) -> None:
    pixels = torch.rand(3, 3, 42, 56, generator=torch.Generator().manual_seed(1))
    features = Dinov2Features.from_pretrained(dinov2_dir, dtype="float32")
    clip_pixels = torch.rand(3, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    embedder = GEMDenseCLIP.from_pretrained(clip_dir, dtype="float32")
    for backbone, batch in ((features, pixels), (embedder, clip_pixels)):
        together = backbone(batch)
        alone = torch.cat([backbone(batch[index : index + 1]) for index in range(len(batch))])
        assert together.shape[0] == 3
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(together[0], together[1])  # different images, different embeddings


def test_transfer_to_cuda_goes_through_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []

    def pin_memory(self: torch.Tensor) -> torch.Tensor:
        calls.append(("pin", None))
        return self

    def to(self: torch.Tensor, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
        calls.append(("to", (str(device), non_blocking)))
        return self

    tensor = torch.ones(2)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    base.to_device(tensor, torch.device("cuda"))
    assert calls == [("pin", None), ("to", ("cuda", True))]
    calls.clear()
    base.to_device(tensor, CPU)
    assert calls == [("to", ("cpu", False))]  # no pinning, no asynchronous copy on the CPU


@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_the_resolved_dtype_is_recorded_in_a_valid_result(clip_dir: Path, dinov2_dir: Path, dtype: str) -> None:
    encoder = CLIPTextEncoder.from_pretrained(clip_dir)
    texts = [f"a photo of a {word}" for word in TINY_VOCABULARY_WORDS]
    database = InMemoryTextDatabase(texts, encoder.encode(texts).numpy(), str(clip_dir))
    tag = TAG.from_pretrained(
        "paper", feature_model=str(dinov2_dir), clip_model=str(clip_dir), database=database,
        image_size=56, num_clusters=3, crf=False, device="cpu", dtype=dtype,
    )
    result = tag(skimage.data.chelsea()[::4, ::4])
    resolved = "bfloat16" if dtype == "auto" and base.native_bfloat16(CPU) else "float32"
    assert result.models["dtype"] == resolved and result.settings["dtype"] == dtype
    record = result.to_record()
    jsonschema.validate(record, segmentation_schema(), cls=jsonschema.Draft202012Validator)
    assert np.unique(result.label_map).size == len(result.segments)


def test_the_toy_world_records_no_dtype() -> None:
    assert "dtype" not in TAG.from_pretrained("toy").models
