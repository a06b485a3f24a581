"""Images are decoded once, with the pipeline's own limits, and handed on without a copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tagseg import toy
from tagseg.cli import app
from tagseg.pipeline import TAG
from tagseg.stream import segment_stream


@pytest.fixture(scope="module")
def toy_tag() -> TAG:
    return TAG.from_pretrained("toy", image_size=96, crf=False, kmeans_restarts=1)


def test_a_decoded_image_goes_through_the_pipeline_without_a_copy(toy_tag: TAG) -> None:
    rgb = toy_tag.decode(toy.toy_scene(0, size=(120, 160))[0])
    assert toy_tag.forward([rgb])[0].rgb is rgb
    flipped = rgb[:, ::-1]  # a view that is not C-contiguous: converted into a new array as before
    converted = toy_tag.forward([flipped])[0].rgb
    assert converted is not flipped and converted.flags.c_contiguous and np.array_equal(converted, flipped)


def test_the_stream_decodes_with_the_pipeline_s_limit(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    Image.fromarray(toy.toy_scene(0, size=(120, 160))[0]).save(path)
    small = TAG.from_pretrained("toy", image_size=96, crf=False, max_pixels=120 * 160 - 1)
    (streamed,) = segment_stream(small, [path], ahead=0)
    assert streamed.error is not None and "more than the limit of 19,199" in str(streamed.error)
    assert streamed.rgb is None  # refused at the one decode, not after it


@pytest.mark.slow
def test_tagseg_segment_takes_an_image_above_the_default_limit_when_max_pixels_is_raised(tmp_path: Path) -> None:
    # 100.5 million pixels, one grey: about 140 kB as a PNG, about 2.5 GB at the peak of the run.
    Image.new("L", (10050, 10000), 90).save(tmp_path / "big.png")
    out = tmp_path / "out"
    arguments = ["segment", str(tmp_path / "big.png"), "-o", str(out), "--preset", "toy", "--formats", "json", "-k", "1", "--no-crf"]
    refused = CliRunner().invoke(app, [*arguments, "--max-pixels", "100000000"])
    assert "more than the limit of 100,000,000" in refused.output
    result = CliRunner().invoke(app, [*arguments, "--max-pixels", "200000000"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "big.json").read_text())
    assert (record["image"]["height"], record["image"]["width"]) == (10000, 10050)
