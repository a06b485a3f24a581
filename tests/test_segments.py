"""Stage 1 functions and pooling on synthetic feature maps with known regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagseg import segments as seg
from tagseg.config import CRFSettings


def _region_grid(size: int = 16) -> np.ndarray:
    """Three regions on a patch grid: left half, top right, bottom right."""
    grid = np.zeros((size, size), dtype=np.int64)
    grid[: size // 2, size // 2 :] = 1
    grid[size // 2 :, size // 2 :] = 2
    return grid


def _features_for(grid: np.ndarray, dim: int = 24, noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((grid.max() + 1, dim))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    features = prototypes[grid] + noise * rng.standard_normal((*grid.shape, dim))
    return torch.from_numpy(features.astype(np.float32))


def _best_match_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Pixel accuracy after mapping each predicted label to its majority true label."""
    correct = 0
    for label in np.unique(predicted):
        correct += np.bincount(truth[predicted == label]).max()
    return correct / truth.size


def test_kmeans_finds_the_three_regions_and_is_deterministic() -> None:
    grid = _region_grid()
    features = _features_for(grid).reshape(-1, 24)
    centres = seg.kmeans(features, 3, restarts=4, seed=1)
    labels = (features @ centres.T).argmax(1).numpy().reshape(grid.shape)
    assert centres.shape == (3, 24)
    assert _best_match_accuracy(labels, grid) == 1.0
    assert torch.equal(centres, seg.kmeans(features, 3, restarts=4, seed=1))


def test_kmeans_with_fewer_points_than_clusters_gives_one_centre_per_point() -> None:
    points = torch.eye(4)
    assert seg.kmeans(points, 15).shape == (4, 4)


def test_upsampling_scores_equals_scoring_upsampled_features() -> None:
    features = _features_for(_region_grid(8), dim=6)
    centres = torch.randn(5, 6)
    fast = seg.upsample(seg.cluster_scores(features, centres), (40, 56))
    upsampled = F.interpolate(features.permute(2, 0, 1)[None], size=(40, 56), mode="bilinear", align_corners=False)[0]
    reference = torch.einsum("chw,kc->khw", upsampled, centres)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_pixel_assignment_recovers_known_regions_at_full_resolution() -> None:
    grid = _region_grid()
    features = _features_for(grid)
    centres = seg.kmeans(features.reshape(-1, 24), 3)
    labels = seg.upsample(seg.cluster_scores(features, centres), (224, 224)).argmax(0).numpy()
    truth = np.kron(grid, np.ones((14, 14), dtype=np.int64))
    assert _best_match_accuracy(labels, truth) > 0.97


def test_crf_cleans_noisy_scores_along_image_edges() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((64, 64), dtype=np.int64)
    truth[:, 32:] = 1
    image = np.where(truth[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
    scores = torch.from_numpy(np.stack([truth == 0, truth == 1]).astype(np.float32) * 1.0)
    scores += torch.from_numpy(rng.normal(0, 1.2, scores.shape).astype(np.float32))
    before = (scores.argmax(0).numpy() == truth).mean()
    after = (seg.refine_with_crf(scores, image, CRFSettings()) == truth).mean()
    assert before < 0.85
    assert after > 0.99


def test_compact_labels_drops_empty_clusters() -> None:
    labels = np.array([[7, 7, 2], [2, 9, 9]])
    compact, original = seg.compact_labels(labels)
    assert original.tolist() == [2, 7, 9]
    assert np.array_equal(original[compact], labels)
    assert compact.max() == 2


def test_pooling_equals_averaging_explicitly_upsampled_embeddings() -> None:
    rng = np.random.default_rng(3)
    embeddings = torch.from_numpy(rng.standard_normal((7, 9, 5)).astype(np.float32))
    label_map = rng.integers(0, 4, size=(50, 61)).astype(np.int32)
    label_map[:10] = 3
    pooled = seg.pool_embeddings(embeddings, label_map, 4)
    upsampled = F.interpolate(embeddings.permute(2, 0, 1)[None], size=(50, 61), mode="bilinear", align_corners=False)
    upsampled = upsampled[0].permute(1, 2, 0).numpy()
    expected = np.stack([upsampled[label_map == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-5)


def test_pooling_refuses_empty_labels() -> None:
    with pytest.raises(ValueError):
        seg.pool_embeddings(torch.zeros(2, 2, 3), np.zeros((4, 4), dtype=np.int32), 2)


def test_weighted_pooling_equals_weighted_means_of_upsampled_embeddings() -> None:
    rng = np.random.default_rng(4)
    embeddings = torch.from_numpy(rng.standard_normal((6, 5, 3)).astype(np.float32))
    weights = torch.from_numpy(rng.random((2, 30, 25)).astype(np.float32))
    pooled = seg.pool_embeddings_weighted(embeddings, weights)
    upsampled = F.interpolate(embeddings.permute(2, 0, 1)[None], size=(30, 25), mode="bilinear", align_corners=False)[0]
    expected = torch.einsum("khw,dhw->kd", weights, upsampled) / weights.sum(dim=(1, 2))[:, None]
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
