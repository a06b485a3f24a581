"""Stage 1 of TAG (segment candidates) and the pooling of Stage 2, as plain tensor functions.

k-means on patch features, dot-product assignment of every pixel to a cluster centre through
bilinearly upsampled scores, dense-CRF refinement, and the mean of upsampled patch embeddings
over each segment.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from tagseg.config import CRFSettings


def kmeans(
    features: torch.Tensor, num_clusters: int, *, restarts: int = 8, iterations: int = 100, seed: int = 0
) -> torch.Tensor:
    """Euclidean k-means over the rows of ``features`` (N, C); the centres of the best of ``restarts`` runs.

    Deterministic for a given ``seed``. Fewer points than clusters gives one centre per point.
    """
    points = np.ascontiguousarray(features.detach().float().cpu().numpy())
    num_clusters = min(num_clusters, points.shape[0])
    clustering = faiss.Kmeans(
        points.shape[1],
        num_clusters,
        niter=iterations,
        nredo=restarts,
        seed=seed,
        min_points_per_centroid=1,
        max_points_per_centroid=points.shape[0],
    )
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a few thousand points: threads only add OpenMP spin-waiting
    try:
        clustering.train(points)
    finally:
        faiss.omp_set_num_threads(threads)
    return torch.from_numpy(clustering.centroids.copy())


def cluster_scores(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Dot product of every patch feature (h, w, C) with every centre (K, C): scores (K, h, w)."""
    return torch.einsum("hwc,kc->khw", features.float(), centres.to(features.device).float())


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of (K, h, w) maps to (K, H, W).

    Dot products are linear, so upsampling scores equals scoring upsampled features (the reference
    order) at a fraction of the memory.
    """
    return F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def refine_with_crf(scores: torch.Tensor, image: np.ndarray, settings: CRFSettings) -> np.ndarray:
    """Dense-CRF labels (H, W) from pixel scores (K, H, W) and the RGB uint8 image (H, W, 3).

    The unary is minus the log softmax of the scores over clusters, probabilities clipped at 1e-5.
    With ``settings.scale < 1`` the CRF runs on a grid that much smaller (scores and image resized
    with antialiasing, both spatial standard deviations scaled alike) and its marginals are
    upsampled bilinearly before the argmax at full size; ``scale=1`` is the reference's full-size CRF.
    """
    num_labels, height, width = scores.shape
    size = (max(1, round(height * settings.scale)), max(1, round(width * settings.scale)))
    if size == (height, width):
        marginals = _crf_marginals(scores, image, settings, spatial_scale=1.0)
        return marginals.argmax(axis=0).astype(np.int32)
    small_scores = F.interpolate(scores[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    small_image = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float(),
        size=size, mode="bilinear", align_corners=False, antialias=True,
    )[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    marginals = _crf_marginals(small_scores, small_image, settings, spatial_scale=size[1] / width)
    full = upsample(torch.from_numpy(marginals), (height, width))
    return full.argmax(dim=0).numpy().astype(np.int32)


def _crf_marginals(scores: torch.Tensor, image: np.ndarray, settings: CRFSettings, spatial_scale: float) -> np.ndarray:
    """Mean-field marginals (K, H, W) of the dense CRF; ``spatial_scale`` multiplies both kernels' ``sxy``."""
    import pydensecrf.densecrf as dcrf

    num_labels, height, width = scores.shape
    probabilities = torch.softmax(scores.float(), dim=0).clamp_min(1e-5)
    unary = np.ascontiguousarray((-torch.log(probabilities)).reshape(num_labels, -1).cpu().numpy())
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=settings.gaussian_sxy * spatial_scale, compat=settings.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=settings.bilateral_sxy * spatial_scale,
        srgb=settings.bilateral_srgb,
        rgbim=np.array(image, dtype=np.uint8, order="C"),
        compat=settings.bilateral_compat,
    )
    return np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(num_labels, height, width)


def compact_labels(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber labels to 0..n-1 in order of first value; returns (new map, old label of each new one).

    Clusters that no pixel belongs to disappear here, so no later step divides by an empty area.
    """
    present, compact = np.unique(label_map, return_inverse=True)
    return compact.reshape(label_map.shape).astype(np.int32), present


def _interpolation_matrix(source: int, target: int) -> torch.Tensor:
    """(target, source) matrix of 1-D bilinear interpolation with align_corners=False."""
    identity = torch.eye(source)[:, None, :]  # (source, 1, source)
    return F.interpolate(identity, size=target, mode="linear", align_corners=False)[:, 0, :].T


def pool_embeddings(embeddings: torch.Tensor, label_map: np.ndarray, num_labels: int) -> torch.Tensor:
    """Mean of the bilinearly upsampled patch embeddings (h, w, D) over each label's pixels.

    Returns (num_labels, D); every label in ``range(num_labels)`` must own at least one pixel.
    """
    labels = torch.from_numpy(np.ascontiguousarray(label_map, dtype=np.int64))
    return pool_embeddings_weighted(embeddings, F.one_hot(labels, num_labels).permute(2, 0, 1).float())


def pool_embeddings_weighted(embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted means of the bilinearly upsampled patch embeddings (h, w, D), one per map of ``weights`` (K, H, W).

    Equal to upsampling the embeddings to (H, W) and averaging, computed without materialising
    the upsampled maps: upsampling is linear, so each weight map is pulled back to the patch grid
    through the transposed interpolation matrices. Weights may be fractional (a region's coverage
    of each pixel); every map needs a positive total.
    """
    grid_h, grid_w, _ = embeddings.shape
    _, height, width = weights.shape
    rows = _interpolation_matrix(grid_h, height)  # (H, h)
    cols = _interpolation_matrix(grid_w, width)  # (W, w)
    totals = weights.sum(dim=(1, 2))
    if bool((totals <= 0).any()):
        raise ValueError("pool_embeddings: every label must own at least one pixel")
    on_grid = rows.T @ weights.float() @ cols  # (K, h, w): each map pulled back to the patch grid
    pooled = torch.einsum("khw,hwd->kd", on_grid, embeddings.float().cpu())
    return pooled / totals[:, None]
