"""The dense CLIP methods wired through settings, builder, pipeline, CLI, TOML, service and eval (tiny random models)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from tagseg import TAG, ConfigError, toy
from tagseg.segmenters import kmeans
from tagseg.backbones.clip import CLIPTextEncoder, DenseCLIP
from tagseg.backbones.dense_methods import DENSE_METHODS, NACLIPSettings, SlidingWindow
from tagseg.candidates import FALLBACK_WORD
from tagseg.cli import app
from tagseg.config import config_toml, load_config, preset, resolve_config
from tagseg.database import InMemoryTextDatabase
from tagseg.serve import ServeSettings, create_app
from tagseg.testing import TINY_CAPTIONS, save_random_clip, save_random_dinov2

CAPTIONS = TINY_CAPTIONS
CAPTION_WORDS = {word for caption in CAPTIONS for word in caption.split()}
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return save_random_dinov2(root / "dinov2", "tiny"), save_random_clip(root / "clip", "tiny")


@pytest.fixture(scope="module")
def database(model_dirs: tuple[Path, Path]) -> InMemoryTextDatabase:
    return InMemoryTextDatabase.from_texts(CAPTIONS, CLIPTextEncoder.from_pretrained(model_dirs[1]))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return toy.toy_scene(3, size=(150, 200))[0]


def _tag(model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, **settings: Any) -> TAG:
    dinov2, clip = model_dirs
    options = {"image_size": 224, "num_clusters": 4, "crf": False, "kmeans_restarts": 2, "dtype": "float32", **settings}
    return TAG.from_pretrained("paper", feature_model=str(dinov2), clip_model=str(clip), database=database, **options)


def _embeddings(result: Any) -> np.ndarray:
    return np.stack([segment.embedding for segment in result.segments])


@pytest.mark.parametrize("method", list(DENSE_METHODS))
def test_each_method_through_the_whole_pipeline(
    model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, photo: np.ndarray, method: str
) -> None:
    tag = _tag(model_dirs, database, dense_method=method)
    assert isinstance(tag.embedder, DenseCLIP) and tag.embedder.method.name == method
    first, second = tag(photo), tag(photo)
    assert first.label_map.shape == photo.shape[:2] and 1 <= len(first.segments) <= 4
    assert np.array_equal(first.label_map, second.label_map)
    np.testing.assert_array_equal(_embeddings(first), _embeddings(second))
    assert _embeddings(first).shape == (len(first.segments), tag.embedder.dim)
    for segment in first.segments:
        assert segment.label in CAPTION_WORDS | {FALLBACK_WORD}  # names come from the database's texts
        assert {hit.text for hit in segment.retrieved} <= set(CAPTIONS)
    assert first.settings["dense_method"] == method


def _image_embedding(result: Any) -> np.ndarray:
    """The area-weighted mean of the segment embeddings: the mean cluster embedding, whatever clusters merged."""
    areas = np.array([segment.area for segment in result.segments], dtype=np.float64)
    return (areas[:, None] * _embeddings(result)).sum(axis=0) / areas.sum()


def test_methods_give_different_embeddings(
    model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, photo: np.ndarray
) -> None:
    """Same clusters (Stage 1 does not depend on the method), other embeddings, per method."""
    results = {method: _tag(model_dirs, database, dense_method=method)(photo) for method in ("gem", "naclip", "proxyclip")}
    maps = [result.cluster_map for result in results.values()]
    assert all(np.array_equal(maps[0], other) for other in maps[1:])
    embeddings = {method: _image_embedding(result) for method, result in results.items()}
    assert not np.allclose(embeddings["gem"], embeddings["naclip"], atol=1e-4)
    assert not np.allclose(embeddings["naclip"], embeddings["proxyclip"], atol=1e-4)


class RecordingFeatures:
    """A patch feature extractor that keeps every output it returns."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.patch_size, self.model_id = inner, inner.patch_size, inner.model_id
        self.outputs: list[torch.Tensor] = []

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.outputs.append(self.inner(pixels))
        return self.outputs[-1]


class RecordingEmbedder:
    """A dense embedder that keeps the proxy features it is given."""

    def __init__(self, inner: DenseCLIP) -> None:
        self.inner, self.patch_size, self.dim, self.model_id = inner, inner.patch_size, inner.dim, inner.model_id
        self.uses_proxy_features = inner.uses_proxy_features
        self.proxies: list[torch.Tensor | None] = []

    def __call__(self, pixels: torch.Tensor, proxy_features: torch.Tensor | None = None) -> torch.Tensor:
        self.proxies.append(proxy_features)
        return self.inner(pixels, proxy_features=proxy_features)


def _recording(tag: TAG) -> tuple[TAG, RecordingFeatures, RecordingEmbedder]:
    features, embedder = RecordingFeatures(tag.features), RecordingEmbedder(tag.embedder)  # type: ignore[arg-type]
    return TAG(features, embedder, tag.text_encoder, tag.database, tag.config), features, embedder


def test_proxyclip_gets_the_features_kmeans_saw_from_one_forward(
    model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, features, embedder = _recording(_tag(model_dirs, database, dense_method="proxyclip"))
    clustered: list[torch.Tensor] = []
    cluster_centres = kmeans.cluster_centres
    monkeypatch.setattr(kmeans, "cluster_centres", lambda points, settings: clustered.append(points) or cluster_centres(points, settings))
    result = tag(photo)
    assert len(features.outputs) == 1 and len(embedder.proxies) == 1  # no second DINOv2 forward
    proxy = embedder.proxies[0]
    assert proxy is features.outputs[0]
    assert tuple(proxy.shape[1:3]) == (16, 16)  # DINOv2's 16x16 grid at 224; CLIP's is 14x14, resampled inside
    assert torch.equal(clustered[0], proxy[0].float().reshape(-1, proxy.shape[-1]))
    assert result.settings["dense_method"] == "proxyclip"


def test_name_regions_runs_stage_one_features_only_for_a_method_that_needs_them(
    model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, photo: np.ndarray
) -> None:
    regions = np.zeros(photo.shape[:2], dtype=np.int32)
    regions[:, 100:] = 1
    for method, forwards in (("gem", 0), ("proxyclip", 1)):
        tag, features, embedder = _recording(_tag(model_dirs, database, dense_method=method))
        result = tag.name_regions(photo, regions)
        assert len(features.outputs) == forwards and len(result.segments) >= 1
        assert (embedder.proxies[0] is features.outputs[0]) if forwards else embedder.proxies == [None]


def test_per_call_method_switches_without_loading_and_is_recorded(
    model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, photo: np.ndarray
) -> None:
    tag = _tag(model_dirs, database)
    clear = _tag(model_dirs, database, dense_method="clearclip")(photo)
    switched = tag(photo, dense_method="clearclip")
    assert switched.settings["dense_method"] == "clearclip" and tag.config.dense_method == "gem"
    np.testing.assert_allclose(_embeddings(switched), _embeddings(clear), atol=1e-6)  # as if built with it
    assert not np.allclose(_image_embedding(tag(photo)), _image_embedding(switched), atol=1e-4)
    variant = tag._embedder_for(tag.settings_for(dense_method="naclip", method_settings={"gaussian_std": 2.0}))
    assert variant.model is tag.embedder.model and variant.method.settings == NACLIPSettings(gaussian_std=2.0)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="multiples of the patch size 16"):
        tag.settings_for(window_size=100, window_stride=50)


def test_proxyclip_preset_is_the_paper_with_proxyclip_and_its_windows(
    model_dirs: tuple[Path, Path], database: InMemoryTextDatabase, photo: np.ndarray
) -> None:
    paper, proxy = preset("paper"), preset("proxyclip")
    assert proxy.replace(dense_method="gem", window_size=0, window_stride=0) == paper
    assert (paper.dense_method, paper.window_size) == ("gem", 0)
    dinov2, clip = model_dirs
    tag = TAG.from_pretrained(
        "proxyclip", feature_model=str(dinov2), clip_model=str(clip), database=database,
        num_clusters=3, crf=False, kmeans_restarts=1, dtype="float32",
    )  # fmt: skip
    assert tag.embedder.sliding_window == SlidingWindow(336, 112)  # type: ignore[attr-defined]
    result = tag(photo)
    assert (result.settings["window_size"], result.settings["window_stride"]) == (336, 112)
    plain = tag(photo, window_size=0, window_stride=0)
    assert not np.allclose(_image_embedding(result), _image_embedding(plain), atol=1e-4)  # 4 windows at 448, not one forward


@pytest.mark.parametrize("method", list(DENSE_METHODS))
def test_toy_world_segments_named_by_a_tiny_clip_with_each_method(model_dirs: tuple[Path, Path], method: str) -> None:
    """The toy features find the shapes; a tiny CLIP embeds them with each method (proxyclip's proxy: the
    toy features, on an 8-pixel grid resampled to CLIP's 16-pixel one); names come from the toy captions."""
    image, truth, _ = toy.toy_scene(2, size=(128, 128))
    tag = TAG.from_pretrained("toy", clip_model=str(model_dirs[1]), database="toy", image_size=128, num_clusters=4, crf=False, dense_method=method)
    assert isinstance(tag.features, toy.ToyPatchFeatures) and tag.embedder.method.name == method  # type: ignore[attr-defined]
    result = tag(image)
    words = {word for caption in toy.toy_captions() for word in caption.split()} | {FALLBACK_WORD}
    assert all(segment.label in words for segment in result.segments)  # the captions' words, or "none left"
    for region in np.unique(truth):  # each true region is mostly one cluster
        _, counts = np.unique(result.cluster_map[truth == region], return_counts=True)
        assert counts.max() >= 0.8 * counts.sum()
    assert np.array_equal(tag(image).label_map, result.label_map)


def test_the_toy_embedder_refuses_dense_methods_it_cannot_run() -> None:
    with pytest.raises(ConfigError, match="toy embedder has no CLIP blocks"):
        TAG.from_pretrained("toy", dense_method="naclip")
    tag = TAG.from_pretrained("toy", image_size=64, crf=False)
    with pytest.raises(ConfigError, match="no dense CLIP methods"):
        tag(toy.toy_scene(0, size=(64, 64))[0], dense_method="naclip")
    with TestClient(create_app(tag, ServeSettings())) as client:
        response = client.post("/v1/segment", json={"image_base64": _png_base64(toy.toy_scene(0, size=(64, 64))[0]), "dense_method": "naclip"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_setting"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_base64(array: np.ndarray) -> str:
    return base64.b64encode(_png(array)).decode("ascii")


# ----------------------------------------------------------------------------- settings from everywhere


def test_toml_embedding_table_and_method_settings(tmp_path: Path) -> None:
    path = tmp_path / "dense.toml"
    path.write_text(
        '[embedding]\ndense_method = "naclip"\nwindow_size = 224\nwindow_stride = 112\n\n'
        '[embedding.method_settings]\ngaussian_std = "none"\nkeep_mlp = true\n'
    )
    config = load_config(path)
    assert (config.dense_method, config.window_size, config.window_stride) == ("naclip", 224, 112)
    options = config.embedding.dense_options()
    assert options["method_settings"] == NACLIPSettings(gaussian_std=None, keep_mlp=True)
    assert options["sliding_window"] == SlidingWindow(224, 112)
    written = tmp_path / "written.toml"
    written.write_text(config_toml(config))
    assert load_config(written) == config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dense_method": "naclip", "method_settings": {"beta": 1.0}}, "unknown setting.*beta for the naclip method"),
        ({"dense_method": "naclip", "method_settings": {"keep_mlp": "yes"}}, "keep_mlp must be bool"),
        ({"method_settings": {"depth": 3}}, "gem_depth setting"),
        ({"window_size": 224}, "1 <= stride <= size"),
        ({"window_stride": 112}, "window_size"),
        ({"dense_method": "dino"}, "dense_method='dino'"),
    ],
)
def test_bad_embedding_settings_say_what_is_wrong(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        preset("paper", **settings)


def test_gem_depth_moved_to_the_embedding_section(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text("[models]\ngem_depth = 3\n")
    with pytest.raises(ConfigError, match=r"gem_depth \(belongs in \[embedding\]\)"):
        load_config(path)
    assert resolve_config(None, None, gem_depth=3).embedding.gem_depth == 3


def _segment_json(args: list[str], image: Path, out: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["segment", str(image), "--out", str(out), "--formats", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads((out / f"{image.stem}.json").read_text())


def _scores(record: dict[str, Any]) -> list[float]:
    return [candidate["score"] for segment in record["segments"] for candidate in segment["candidates"]]


def test_cli_flag_and_toml_reach_the_embedder(model_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    image_array = toy.toy_scene(4, size=(96, 96))[0]
    image = tmp_path / "scene.png"
    Image.fromarray(image_array).save(image)
    common = ["--preset", "toy", "--clip-model", str(model_dirs[1]), "--image-size", "96", "--no-crf"]
    gem = _segment_json(common, image, tmp_path / "gem")
    flag = _segment_json([*common, "--dense-method", "clearclip"], image, tmp_path / "flag")
    toml = tmp_path / "clear.toml"
    toml.write_text('[embedding]\ndense_method = "clearclip"\n')
    from_file = _segment_json([*common, "--config", str(toml)], image, tmp_path / "toml")
    expected = TAG.from_pretrained(
        "toy", clip_model=str(model_dirs[1]), database="toy", image_size=96, crf=False, dense_method="clearclip"
    )(image_array)
    assert gem["settings"]["dense_method"] == "gem"
    for record in (flag, from_file):
        assert record["settings"]["dense_method"] == "clearclip"
        np.testing.assert_allclose(_scores(record), [c.score for s in expected.segments for c in s.candidates], atol=1e-5)
    assert not np.allclose(_scores(flag)[:3], _scores(gem)[:3], atol=1e-4)
    named = _segment_json([*common, "--dense-method", "naclip", "--method-settings", "gaussian_std=none,keep_mlp=true"], image, tmp_path / "nac")
    assert named["settings"]["method_settings"] == {"gaussian_std": "none", "keep_mlp": True}


def test_service_per_request_method_reaches_the_embedder(model_dirs: tuple[Path, Path]) -> None:
    image = toy.toy_scene(4, size=(96, 96))[0]
    tag = TAG.from_pretrained("toy", clip_model=str(model_dirs[1]), database="toy", image_size=96, crf=False)
    with TestClient(create_app(tag, ServeSettings())) as client:
        bodies = {
            method: client.post("/v1/segment", json={"image_base64": _png_base64(image), "dense_method": method, "masks": False}).json()
            for method in ("gem", "clearclip")
        }
        form = client.post("/v1/segment", files={"image": ("x.png", _png(image), "image/png")}, data={"dense_method": "clearclip"})
    assert bodies["clearclip"]["settings"]["dense_method"] == "clearclip" and bodies["gem"]["settings"]["dense_method"] == "gem"
    expected = tag(image, dense_method="clearclip")
    np.testing.assert_allclose(_scores(bodies["clearclip"]), [c.score for s in expected.segments for c in s.candidates], atol=1e-5)
    assert not np.allclose(_scores(bodies["clearclip"])[:3], _scores(bodies["gem"])[:3], atol=1e-4)
    assert form.status_code == 200 and form.json()["settings"]["dense_method"] == "clearclip"
    assert tag.config.dense_method == "gem"


def test_eval_records_and_reports_the_dense_method(model_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(f'preset = "toy"\n\n[models]\nclip_model = "{model_dirs[1]}"\nimage_size = 64\n\n[clusters]\ncrf = false\n')
    rows = []
    for method in ("gem", "naclip"):
        out = tmp_path / method
        result = runner.invoke(
            app,
            ["eval", "--dataset", "toy", "--toy-images", "2", "--config", str(config), "--dense-method", method,
             "--protocol", "oracle-image", "--no-cache", "--no-progress", "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["settings"]["pipeline"]["dense_method"] == method
        assert report["dense_method"] == ("gem (depth 0)" if method == "gem" else "naclip")
        rows += [line for line in (out / "report.md").read_text().splitlines() if line.startswith(f"| {report['dense_method']} | oracle-image |")]
    assert len(rows) == 2
