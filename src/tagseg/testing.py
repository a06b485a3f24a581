"""Random-weight backbones saved like real checkpoints, for tests and benchmarks.

The helpers write what a user's model directory holds (``config.json``, safetensors weights,
``preprocessor_config.json`` and, for CLIP, tokenizer files), so the directories load through
the very ``from_pretrained`` calls users make. Weights are seeded and deterministic.

``tiny`` models run a forward pass in milliseconds; the real sizes match the architectures of
``facebook/dinov2-small``/``-base``, ``openai/clip-vit-base-patch16`` and
``openai/clip-vit-large-patch14`` (for timings; the weights are random), of
``facebook/sam-vit-base`` for Segment Anything, and of the Talk2DINO ViT-B projection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTokenizer,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SamConfig,
    SamImageProcessorPil,
    SamModel,
)

from tagseg.backbones.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tagseg.backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "save_random_clip",
    "save_random_dinov2",
    "save_random_sam",
    "save_random_talk2dino",
    "TINY_CAPTIONS",
    "TINY_VOCABULARY_WORDS",
]

DinoSize = Literal["tiny", "small", "base"]
Talk2DINOSize = Literal["tiny", "base"]
ClipSize = Literal["tiny", "base-16", "large-14"]
SamSize = Literal["tiny", "base"]

_DINOV2_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2},
    "small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
}

_CLIP_SIZES: dict[str, dict[str, Any]] = {
    # Six vision layers so that the default GEM depth (the last 6 blocks) applies to tiny models too.
    "tiny": {
        "projection_dim": 24,
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 6,
                   "num_attention_heads": 4, "patch_size": 16},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4},
    },
    "base-16": {
        "projection_dim": 512,
        "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "patch_size": 16},
        "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 8},
    },
    "large-14": {
        "projection_dim": 768,
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "patch_size": 14},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12},
    },
}
_CLIP_REAL_VOCAB_SIZE = 49408

TINY_CAPTIONS = [
    "a cat sleeping on a red sofa",
    "a black cat on the sofa",
    "a dog running in the green grass",
    "the dog and the grass in a park",
    "a red car parked on the street",
    "a car on a wet street at night",
    "a person riding a horse",
    "a horse standing in a field",
]
"""A small caption database for tests with tiny models: each concept in two captions (CaSED's min-count rule)."""

TINY_VOCABULARY_WORDS = (
    "a an the of and in on with photo picture image cat dog person people car tree sky road grass "
    "building water house bird horse sheep cow boat train bus bicycle bottle chair table sofa plant"
).split()
"""Words that the tiny tokenizer encodes as single tokens (others fall back to byte symbols)."""


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _check_size(size: str, known: dict[str, Any]) -> None:
    if size not in known:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(known)}")


def save_random_dinov2(
    directory: str | os.PathLike[str],
    size: DinoSize = "tiny",
    registers: bool = False,
    seed: int = 0,
) -> Path:
    """Save a random DINOv2 (``Dinov2Model``, or ``Dinov2WithRegistersModel`` with 4 registers) to ``directory``."""
    _check_size(size, _DINOV2_SIZES)
    common = dict(
        **_DINOV2_SIZES[size],
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    torch.manual_seed(seed)
    if registers:
        model: Dinov2Model | Dinov2WithRegistersModel = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(**common, num_register_tokens=4)
        )
    else:
        model = Dinov2Model(Dinov2Config(**common))
    target = Path(directory)
    model.save_pretrained(target)
    _write_json(
        target / "preprocessor_config.json",
        {
            "image_processor_type": "BitImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 256},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD),
            "do_convert_rgb": True,
        },
    )
    return target


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2, CLIP) uses for the byte values, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    stand_ins = {byte: byte for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in stand_ins:
            stand_ins[byte] = 256 + shift
            shift += 1
    return [chr(stand_ins[byte]) for byte in range(256)]


def _tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small valid CLIP BPE vocabulary: all byte symbols, their word-final forms, merges, specials."""
    symbols = _byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    merges: list[tuple[str, str]] = []
    for word in TINY_VOCABULARY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            pair = (merged, piece)
            merged += piece
            if pair not in merges:
                merges.append(pair)
                tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocabulary: dict[str, int] = {}
    for token in tokens:
        vocabulary.setdefault(token, len(vocabulary))
    return vocabulary, merges


def save_random_clip(
    directory: str | os.PathLike[str],
    size: ClipSize = "tiny",
    seed: int = 0,
) -> Path:
    """Save a random full ``CLIPModel`` (both towers), its tokenizer and preprocessor config to ``directory``.

    The tokenizer is a tiny valid CLIP BPE vocabulary (every byte, the words in
    :data:`TINY_VOCABULARY_WORDS`, ``<|startoftext|>``/``<|endoftext|>``) for every size.
    """
    _check_size(size, _CLIP_SIZES)
    spec = _CLIP_SIZES[size]
    vocabulary, merges = _tiny_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocabulary, merges=merges, model_max_length=77)
    text_config = dict(
        **spec["text"],
        vocab_size=len(vocabulary) if size == "tiny" else _CLIP_REAL_VOCAB_SIZE,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=spec["projection_dim"],
    )
    vision_config = dict(
        **spec["vision"],
        image_size=224,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=spec["projection_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(
        CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=spec["projection_dim"])
    )
    target = Path(directory)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    _write_json(
        target / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 224},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(OPENAI_CLIP_MEAN),
            "image_std": list(OPENAI_CLIP_STD),
            "do_convert_rgb": True,
        },
    )
    return target


_SAM_SIZES: dict[str, dict[str, Any]] = {
    # The tiny model sees 128x128 inputs (8x8 embeddings, 32x32 low-resolution masks).
    "tiny": {
        "input_size": 128,
        "vision": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "output_channels": 16,
                   "window_size": 4, "global_attn_indexes": [1], "mlp_dim": 64},
        "prompt_hidden_size": 16,
        "decoder": {"hidden_size": 16, "mlp_dim": 32, "num_attention_heads": 2, "iou_head_hidden_dim": 16},
    },
    # facebook/sam-vit-base: ViT-B/16 image encoder at 1024x1024, the standard prompt encoder and decoder.
    "base": {
        "input_size": 1024,
        "vision": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "output_channels": 256,
                   "window_size": 14, "global_attn_indexes": [2, 5, 8, 11]},
        "prompt_hidden_size": 256,
        "decoder": {"hidden_size": 256, "mlp_dim": 2048, "num_attention_heads": 8, "iou_head_hidden_dim": 256},
    },
}


def save_random_sam(directory: str | os.PathLike[str], size: SamSize = "tiny", seed: int = 0) -> Path:
    """Save a random ``SamModel`` and its ``SamImageProcessorPil`` settings to ``directory``.

    The image encoder's ``num_pos_feats`` is half the prompt encoder's hidden size, as SAM's shared
    positional embedding requires. The processor resizes the longer side to the model's input size.
    """
    _check_size(size, _SAM_SIZES)
    spec = _SAM_SIZES[size]
    input_size, patch_size = spec["input_size"], 16
    prompt_hidden = spec["prompt_hidden_size"]
    config = SamConfig(
        vision_config=dict(
            **spec["vision"],
            image_size=input_size,
            patch_size=patch_size,
            num_pos_feats=prompt_hidden // 2,
            initializer_range=0.02,  # the config's default (1e-10) makes every image embedding zero
        ),
        prompt_encoder_config=dict(hidden_size=prompt_hidden, image_size=input_size, patch_size=patch_size),
        mask_decoder_config=spec["decoder"],
    )
    torch.manual_seed(seed)
    model = SamModel(config)
    target = Path(directory)
    model.save_pretrained(target)
    mask_size = input_size // 4  # the mask decoder upsamples the embedding grid four times
    SamImageProcessorPil(
        size={"longest_edge": input_size},
        pad_size={"height": input_size, "width": input_size},
        mask_size={"longest_edge": mask_size},
        mask_pad_size={"height": mask_size, "width": mask_size},
    ).save_pretrained(target)
    return target


_TALK2DINO_SIZES: dict[str, tuple[DinoSize, ClipSize]] = {"tiny": ("tiny", "tiny"), "base": ("base", "base-16")}
TALK2DINO_CLIP_FOLDER = "clip-text"
"""Where :func:`save_random_talk2dino` puts the CLIP text tower, named by its ``config.json``."""


def save_random_talk2dino(directory: str | os.PathLike[str], size: Talk2DINOSize = "tiny", seed: int = 0) -> Path:
    """Save a random Talk2DINO folder in the Hugging Face layout of ``lorebianchi98/Talk2DINO-ViTB``.

    ``model.safetensors`` holds the projection under ``proj.`` (``linear_layer``, ``hidden_layers.0``)
    beside a stand-in for the other weights of the real file (``logit_scale``); ``config.json``'s
    ``clip_model_name`` names a random CLIP saved in the folder :data:`TALK2DINO_CLIP_FOLDER`. Its
    DINOv2 width is :func:`save_random_dinov2`'s of the same size (``base``: ViT-B/14 and CLIP ViT-B/16).
    """
    from safetensors.torch import save_file

    _check_size(size, _TALK2DINO_SIZES)
    dino_size, clip_size = _TALK2DINO_SIZES[size]
    dino_dim, clip_dim = _DINOV2_SIZES[dino_size]["hidden_size"], _CLIP_SIZES[clip_size]["projection_dim"]
    target = Path(directory)
    save_random_clip(target / TALK2DINO_CLIP_FOLDER, clip_size, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    weights = {
        "proj.linear_layer.weight": torch.randn(dino_dim, clip_dim, generator=generator) / clip_dim**0.5,
        "proj.linear_layer.bias": torch.randn(dino_dim, generator=generator) * 0.1,
        "proj.hidden_layers.0.weight": torch.randn(dino_dim, dino_dim, generator=generator) / dino_dim**0.5,
        "proj.hidden_layers.0.bias": torch.randn(dino_dim, generator=generator) * 0.1,
        "logit_scale": torch.tensor(2.659),
    }
    save_file(weights, str(target / "model.safetensors"))
    _write_json(target / "config.json", {"clip_model_name": TALK2DINO_CLIP_FOLDER, "model_name": "dinov2_vitb14_reg",
                                         "proj_class": "vitb_mlp_infonce", "resize_dim": 448})
    return target
