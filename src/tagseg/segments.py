"""Label-map bookkeeping and the pooling of Stage 2: the mean of upsampled patch embeddings over each segment."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
