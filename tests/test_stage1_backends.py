"""Stage 1's torch backends (``kmeans_backend``, ``crf.backend``) through the whole pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from efficientnet_support import LiteClassifierTextEncoder, LiteDenseEmbedder, LitePatchFeatures, imagenet_names
from tagseg import TAG, TAGConfig
from tagseg.database.memory import InMemoryTextDatabase
from tagseg.toy import toy_scene
from toy_support import named_iou

TORCH_STAGE1 = {"kmeans_backend": "torch", "crf": {"backend": "torch"}}


@pytest.fixture(scope="module")
def toy_tag() -> TAG:
    return TAG.from_pretrained("toy")


@pytest.mark.parametrize(
    "overrides", [{"kmeans_backend": "torch"}, {"crf": {"backend": "torch"}}, TORCH_STAGE1], ids=["kmeans", "crf", "both"]
)
def test_torch_backends_recover_and_name_the_toy_world(toy_tag: TAG, overrides: dict) -> None:
    image, regions, names = toy_scene(3, num_shapes=3)
    result = toy_tag(image, **overrides)
    assert result.label_map.shape == regions.shape
    assert sorted(np.unique(result.label_map).tolist()) == list(range(len(result.segments)))
    assert np.mean(named_iou(result, regions, names)) >= 0.9
    assert set(names) <= set(result.labels)
    assert result.settings["kmeans_backend"] == overrides.get("kmeans_backend", "faiss")


def test_automatic_k_with_the_torch_kmeans(toy_tag: TAG) -> None:
    image, regions, names = toy_scene(5, num_shapes=3)
    result = toy_tag(image, num_clusters="auto", min_clusters=2, max_clusters=6, **TORCH_STAGE1)
    assert np.mean(named_iou(result, regions, names)) >= 0.9


def test_torch_crf_labels_as_pydensecrf_through_the_pipeline_on_a_photo() -> None:
    """Real features (EfficientNet-Lite0), the same faiss k-means: only the CRF's implementation differs."""
    encoder = LiteClassifierTextEncoder()
    database = InMemoryTextDatabase.from_texts(imagenet_names(), encoder)
    tag = TAG(LitePatchFeatures(), LiteDenseEmbedder(), encoder, database, TAGConfig(num_clusters=6))
    photo = skimage.data.chelsea()
    reference = tag(photo)
    torch_crf = tag(photo, crf={"backend": "torch"})
    assert (torch_crf.cluster_map == reference.cluster_map).mean() >= 0.98
    assert torch_crf.settings["crf"]["backend"] == "torch" and reference.settings["crf"]["backend"] == "pydensecrf"
