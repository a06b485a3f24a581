"""Stage 1 functions and pooling on synthetic feature maps with known regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagseg import segments as seg
from tagseg.segmenters import kmeans
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
    centres = kmeans.kmeans(features, 3, restarts=4, seed=1)
    labels = (features @ centres.T).argmax(1).numpy().reshape(grid.shape)
    assert centres.shape == (3, 24)
    assert _best_match_accuracy(labels, grid) == 1.0
    assert torch.equal(centres, kmeans.kmeans(features, 3, restarts=4, seed=1))


def test_kmeans_with_fewer_points_than_clusters_gives_one_centre_per_point() -> None:
    points = torch.eye(4)
    assert kmeans.kmeans(points, 15).shape == (4, 4)


def test_upsampling_scores_equals_scoring_upsampled_features() -> None:
    features = _features_for(_region_grid(8), dim=6)
    centres = torch.randn(5, 6)
    fast = kmeans.upsample(kmeans.cluster_scores(features, centres), (40, 56))
    upsampled = F.interpolate(features.permute(2, 0, 1)[None], size=(40, 56), mode="bilinear", align_corners=False)[0]
    reference = torch.einsum("chw,kc->khw", upsampled, centres)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_pixel_assignment_recovers_known_regions_at_full_resolution() -> None:
    grid = _region_grid()
    features = _features_for(grid)
    centres = kmeans.kmeans(features.reshape(-1, 24), 3)
    labels = kmeans.upsample(kmeans.cluster_scores(features, centres), (224, 224)).argmax(0).numpy()
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
    after = (kmeans.refine_with_crf(scores, image, CRFSettings()) == truth).mean()
    assert before < 0.85
    assert after > 0.99


def _direct_crf_marginals(scores: np.ndarray, image: np.ndarray, settings: CRFSettings, sxy_factor: float) -> np.ndarray:
    """pydensecrf called as the reference calls it, with the spatial deviations multiplied by ``sxy_factor``."""
    import pydensecrf.densecrf as dcrf

    labels, height, width = scores.shape
    shifted = np.exp(scores - scores.max(axis=0))
    probabilities = np.maximum(shifted / shifted.sum(axis=0), 1e-5)
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probabilities).reshape(labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=settings.gaussian_sxy * sxy_factor, compat=settings.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=settings.bilateral_sxy * sxy_factor, srgb=settings.bilateral_srgb,
        rgbim=np.ascontiguousarray(image), compat=settings.bilateral_compat,
    )
    return np.asarray(crf.inference(settings.iterations)).reshape(labels, height, width)


def _photo_scores(size: int = 96, labels: int = 4) -> tuple[torch.Tensor, np.ndarray]:
    import skimage.data
    from PIL import Image

    image = np.array(Image.fromarray(skimage.data.chelsea()).resize((size, size), Image.Resampling.BILINEAR))
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 255, (labels, 3))
    distances = -np.linalg.norm(image[None].astype(np.float64) - centres[:, None, None], axis=-1) / 40
    return torch.from_numpy((distances + rng.normal(0, 0.5, distances.shape)).astype(np.float32)), image


def test_full_size_crf_is_the_reference_computation() -> None:
    scores, image = _photo_scores()
    expected = _direct_crf_marginals(scores.numpy(), image, CRFSettings(scale=1.0), 1.0).argmax(axis=0)
    labels = kmeans.refine_with_crf(scores, image, CRFSettings(scale=1.0))
    assert (labels == expected).mean() > 0.999  # float32 softmax here versus float64 in the check


def test_reduced_grid_crf_runs_small_and_upsamples_its_marginals() -> None:
    scores, image = _photo_scores()
    settings = CRFSettings(scale=0.5, min_side=48)
    small_scores = F.interpolate(scores[None], size=(48, 48), mode="bilinear", antialias=True)[0].numpy()
    small_image = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(48, 48), mode="bilinear", antialias=True
    )[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)
    marginals = torch.from_numpy(_direct_crf_marginals(small_scores, small_image, settings, 0.5).astype(np.float32))
    expected = F.interpolate(marginals[None], size=(96, 96), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    labels = kmeans.refine_with_crf(scores, image, settings)
    assert labels.shape == (96, 96) and labels.dtype == np.int32
    assert (labels == expected).mean() > 0.995
    full = kmeans.refine_with_crf(scores, image, CRFSettings(scale=1.0))
    assert 0.8 < (labels == full).mean() < 1.0  # an approximation of the full-size CRF, not a copy of it
    floored = kmeans.refine_with_crf(scores, image, CRFSettings(scale=0.5, min_side=96))
    assert np.array_equal(floored, full)  # the floor keeps a small image's full grid


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
