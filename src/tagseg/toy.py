"""A toy vision-language world that implements the four seams with no neural network.

Colours play the part of concepts: patch features and patch embeddings are soft assignments of a
patch's colour to a palette of named colours, and the toy text tower puts each colour word on its
palette axis and every other word on a pseudo-random direction of its own. A caption list mentions
the colours among distractor words. Images of coloured shapes with known masks then exercise every
stage of the real pipeline (k-means, CRF, pooling, retrieval, candidate rules, naming) with a known
right answer, offline and in milliseconds.

With ``shades=True`` the world also holds two-word colour names (:data:`SHADES`, e.g. "sky blue"):
the text tower puts the bigram on an axis of its own, while "sky" alone is an ordinary hashed word
and "blue" alone is the blue axis. A single-word namer can then only say "blue" (or a neighbour) for
a sky blue shape; naming it right needs multi-word candidates. The default world has no shades.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from tagseg.database.memory import InMemoryTextDatabase
from tagseg.interfaces import MaskProposals, TextEncoder

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35),
    "green": (40, 150, 55),
    "blue": (35, 65, 200),
    "yellow": (235, 215, 45),
    "orange": (240, 135, 25),
    "purple": (125, 45, 155),
    "pink": (245, 150, 195),
    "brown": (115, 70, 30),
    "grey": (128, 128, 128),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}

SHADES: dict[str, tuple[int, int, int]] = {
    "sky blue": (135, 206, 235),
    "navy blue": (20, 30, 110),
}
"""Two-word colour names, present only in the world built with ``shades=True``."""

_NOUNS = ["car", "door", "balloon", "house", "flower", "umbrella", "bicycle", "kite", "shirt", "boat"]
_DISTRACTORS = [
    "a dog sleeping on the sofa",
    "people walking along the beach at sunset",
    "a bowl of soup on a wooden table",
    "cars parked on a street at night",
    "a man riding a horse in the field",
    "an old church in a small village",
    "children playing football in the park",
    "a cat looking out of the window",
]


def colours(shades: bool = False) -> dict[str, tuple[int, int, int]]:
    """The named colours of the world, one joint-space axis each: the palette, then the shades."""
    return {**PALETTE, **SHADES} if shades else dict(PALETTE)


def toy_captions(shades: bool = False) -> list[str]:
    """Captions naming every colour six times, each beside nouns only (so every candidate word is a
    colour or a thing), plus distractors."""
    captions = []
    for i, colour in enumerate(colours(shades)):
        nouns = [_NOUNS[(i + j) % len(_NOUNS)] for j in range(3)]
        captions += [
            f"a {colour} {nouns[0]} near the river",
            f"the {colour} {nouns[0]} in the morning",
            f"a {colour} {nouns[1]} on the table",
            f"the {colour} {nouns[2]} by the house",
            f"a {colour} {nouns[1]} and a tree",
            f"the {colour} {nouns[2]} in the garden",
        ]
    return captions + _DISTRACTORS


def _soft_assignment(pixels: torch.Tensor, sharpness: float, shades: bool) -> torch.Tensor:
    """(B, P, H, W) Gaussian affinity of every pixel's colour to every named colour."""
    palette = torch.tensor(list(colours(shades).values()), dtype=torch.float32) / 255.0  # (P, 3)
    distances = ((pixels[:, None] - palette[None, :, :, None, None]) ** 2).sum(dim=2)
    return torch.exp(-sharpness * distances)


class ToyPatchFeatures:
    """Patch features: mean colour affinities over 8x8 patches, L2-normalised (stands in for DINOv2)."""

    patch_size = 8
    model_id = "tagseg/toy-features"

    def __init__(self, shades: bool = False) -> None:
        self.shades = shades

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        affinity = _soft_assignment(pixels.float(), sharpness=25.0, shades=self.shades)
        patches = F.avg_pool2d(affinity, self.patch_size)
        return F.normalize(patches.permute(0, 2, 3, 1), dim=-1)


class ToyDenseEmbedder:
    """Patch embeddings in the toy joint space: colour axes first, text-only axes left at zero."""

    patch_size = 16

    def __init__(self, extra_dims: int = 64, shades: bool = False) -> None:
        self.shades = shades
        self.dim = len(colours(shades)) + extra_dims
        self.model_id = _joint_space_id(shades)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        affinity = _soft_assignment(pixels.float(), sharpness=12.0, shades=self.shades)
        affinity = F.avg_pool2d(affinity, self.patch_size)
        embeddings = affinity.permute(0, 2, 3, 1)
        padding = self.dim - embeddings.shape[-1]
        return F.pad(embeddings, (0, padding))


def _joint_space_id(shades: bool) -> str:
    return "tagseg/toy-joint-space+shades" if shades else "tagseg/toy-joint-space"


class ToyTextEncoder:
    """Text tower of the toy joint space: colour names on their axis, other words hashed.

    Texts are lowercased. A shade is recognised only as its two words in a row ("sky blue");
    its words apart are read as ordinary words.
    """

    def __init__(self, extra_dims: int = 64, other_word_weight: float = 0.5, shades: bool = False) -> None:
        self.shades = shades
        self.num_colours = len(colours(shades))
        self.dim = self.num_colours + extra_dims
        self.model_id = _joint_space_id(shades)
        self.other_word_weight = other_word_weight
        self._colour_axis = {name: i for i, name in enumerate(colours(shades))}

    def _word_vector(self, word: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        if word in self._colour_axis:
            vector[self._colour_axis[word]] = 1.0
            return vector
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        direction = np.random.default_rng(seed).standard_normal(self.dim - self.num_colours)
        vector[self.num_colours :] = self.other_word_weight * direction / np.linalg.norm(direction)
        return vector

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z]+", text.lower())
            position = 0
            while position < len(words):
                bigram = " ".join(words[position : position + 2])
                step = 2 if bigram in self._colour_axis else 1
                vectors[row] += self._word_vector(bigram if step == 2 else words[position])
                position += step
        return F.normalize(torch.from_numpy(vectors), dim=-1)


class ToyMaskGenerator:
    """A region proposer that knows the answer: the true masks of one toy scene (stands in for SAM).

    Built from a scene's region map (:func:`toy_scene`), it proposes one mask per region, in region
    order, each with score 1.0, for any image of that scene's size. It shows that naming does not
    depend on who segments.
    """

    model_id = "tagseg/toy-truth"

    def __init__(self, regions: np.ndarray) -> None:
        self.regions = np.asarray(regions)

    def __call__(self, image: np.ndarray) -> MaskProposals:
        if np.asarray(image).shape[:2] != self.regions.shape:
            raise ValueError(f"this toy generator knows a scene of size {self.regions.shape}, not {np.asarray(image).shape[:2]}")
        labels = np.unique(self.regions)
        return MaskProposals(masks=self.regions[None] == labels[:, None, None], scores=np.ones(len(labels), np.float32))


def toy_database(encoder: TextEncoder | None = None) -> InMemoryTextDatabase:
    """The toy captions embedded by ``encoder`` (default: the toy text tower; with shades when it knows them)."""
    encoder = encoder or ToyTextEncoder()
    shades = isinstance(encoder, ToyTextEncoder) and encoder.shades
    return InMemoryTextDatabase.from_texts(toy_captions(shades), encoder)


def toy_scene(
    seed: int,
    size: tuple[int, int] = (240, 320),
    num_shapes: int = 3,
    noise: float = 6.0,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A photo-like image of coloured shapes on a coloured background, with its ground truth.

    Returns ``(image HxWx3 uint8, region map HxW int32, colour name of each region)``; region 0 is
    the background. Colours are distinct, drawn from the palette, or ``names`` gives them in order
    (background first; any of :func:`colours` with shades); shapes are rectangles, ellipses and
    triangles that do not overlap; edges are slightly blurred and pixels noisy, as in a photo.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    fills = colours(shades=True)
    if names is None:
        names = [str(n) for n in rng.choice(list(PALETTE), size=num_shapes + 1, replace=False)]
    elif len(names) != num_shapes + 1 or not set(names) <= set(fills):
        raise ValueError(f"names must be {num_shapes + 1} colours of {list(fills)}, got {list(names)}")
    names = list(names)
    canvas = Image.new("RGB", (width, height), fills[names[0]])
    regions = Image.new("I", (width, height), 0)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(10_000):
        if len(boxes) == num_shapes:
            break
        w, h = (int(v) for v in rng.integers([width // 5, height // 5], [width // 2, height // 2]))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if all(x > bx + bw or bx > x + w or y > by + bh or by > y + h for bx, by, bw, bh in boxes):
            boxes.append((x, y, w, h))
    else:
        raise ValueError(f"cannot place {num_shapes} separate shapes in an image of size {size}")
    for region, (name, (x, y, w, h)) in enumerate(zip(names[1:], boxes), start=1):
        for target, fill in ((canvas, fills[name]), (regions, region)):
            draw = ImageDraw.Draw(target)
            if region % 3 == 0:
                draw.rectangle([x, y, x + w, y + h], fill=fill)
            elif region % 3 == 1:
                draw.ellipse([x, y, x + w, y + h], fill=fill)
            else:
                draw.polygon([(x, y + h), (x + w // 2, y), (x + w, y + h)], fill=fill)
    image = np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
    image += rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(regions, dtype=np.int32), names
