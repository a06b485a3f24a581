"""Granularity controls: how many clusters per image, how small a region may be, and instances.

* :func:`cluster_centres` — k-means with a fixed ``k`` or ``k`` chosen per image (``num_clusters="auto"``)
  by the silhouette or elbow criterion over ``[min_clusters, max_clusters]``.
* :func:`merge_small_regions` — connected regions below a minimum area join their most similar
  adjacent cluster instead of being dropped (regions from :func:`tagseg.masks.connected_components`).

Only numpy and torch (plus faiss through :func:`tagseg.segments.kmeans`).
"""

from __future__ import annotations

import numpy as np
import torch

from tagseg import segments as seg
from tagseg.config import ClusterSettings
from tagseg.masks import connected_components

__all__ = ["choose_num_clusters", "cluster_centres", "merge_small_regions", "silhouette"]

_SILHOUETTE_SAMPLE = 1024


def cluster_centres(points: torch.Tensor, clusters: ClusterSettings) -> torch.Tensor:
    """k-means centres of ``points`` (N, C): ``clusters.num_clusters`` of them, or the automatic choice."""
    options = {"restarts": clusters.kmeans_restarts, "iterations": clusters.kmeans_iterations, "seed": clusters.seed}
    if clusters.num_clusters != "auto":
        return seg.kmeans(points, int(clusters.num_clusters), **options)
    _, centres, _ = choose_num_clusters(
        points, clusters.min_clusters, clusters.max_clusters, clusters.cluster_criterion, **options
    )
    return centres


def choose_num_clusters(
    points: torch.Tensor, min_k: int, max_k: int, criterion: str = "silhouette", **kmeans_options: int
) -> tuple[int, torch.Tensor, dict[int, float]]:
    """Run k-means for every k in ``[min_k, max_k]`` and keep the best k.

    ``silhouette``: the highest mean silhouette (Euclidean, on up to 1024 sampled points).
    ``elbow``: the k whose inertia lies furthest below the straight line joining the first and last
    k's inertia (the knee of the curve). Returns ``(k, centres, {k: criterion value})``.
    Costs one k-means run (with its restarts) per k in the range.
    """
    points = points.float()
    max_k = max(min_k, min(max_k, points.shape[0] - 1))
    sample = points
    if points.shape[0] > _SILHOUETTE_SAMPLE:
        generator = torch.Generator().manual_seed(int(kmeans_options.get("seed", 0)))
        sample = points[torch.randperm(points.shape[0], generator=generator)[:_SILHOUETTE_SAMPLE]]
    fits: dict[int, torch.Tensor] = {}
    values: dict[int, float] = {}
    for k in range(min_k, max_k + 1):
        centres = seg.kmeans(points, k, **kmeans_options)
        fits[k] = centres
        if criterion == "silhouette":
            values[k] = silhouette(sample, torch.cdist(sample, centres).argmin(dim=1))
        else:
            values[k] = float(torch.cdist(points, centres).min(dim=1).values.pow(2).sum())
    if criterion == "silhouette":
        best = max(values, key=lambda k: values[k])
    else:
        best = _knee(values)
    return best, fits[best], values


def _knee(inertia: dict[int, float]) -> int:
    """The k furthest below the chord of the (k, inertia) curve, both axes scaled to [0, 1]."""
    ks = np.array(sorted(inertia), dtype=np.float64)
    values = np.array([inertia[int(k)] for k in ks])
    if len(ks) < 3 or values[0] == values[-1]:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (values - values[-1]) / (values[0] - values[-1])
    return int(ks[np.argmax((1.0 - x) - y)])


def silhouette(points: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean silhouette coefficient of ``points`` (N, C) under integer ``labels`` (N,); 0 for singletons."""
    labels = torch.unique(labels, return_inverse=True)[1]
    if int(labels.max()) == 0:
        return 0.0
    distances = torch.cdist(points, points)
    onehot = torch.nn.functional.one_hot(labels).float()
    counts = onehot.sum(dim=0)
    sums = distances @ onehot  # (N, K): total distance of each point to each cluster
    own = sums.gather(1, labels[:, None])[:, 0]
    own_count = counts[labels]
    a = own / (own_count - 1).clamp_min(1)
    means = sums / counts
    means.scatter_(1, labels[:, None], float("inf"))
    b = means.min(dim=1).values
    scores = torch.where(own_count > 1, (b - a) / torch.maximum(a, b).clamp_min(1e-12), torch.zeros_like(a))
    return float(scores.mean())


def _regions(label_map: np.ndarray) -> np.ndarray:
    """Connected regions of equal label (8-connected): ids 0..n-1 over every pixel."""
    regions = np.zeros(label_map.shape, dtype=np.int32)
    offset = 0
    for value in np.unique(label_map):
        components, count = connected_components(label_map == value)
        inside = components > 0
        regions[inside] = components[inside] + offset - 1
        offset += count
    return regions


def merge_small_regions(label_map: np.ndarray, affinity: np.ndarray, min_area: int, max_rounds: int = 10) -> np.ndarray:
    """Relabel each connected region smaller than ``min_area`` pixels to an adjacent label.

    The label chosen among the region's 4-neighbours is the one whose ``affinity`` (K, H, W), e.g.
    the cluster scores, is highest on average over the region's pixels. Smallest regions go first;
    rounds repeat until no region is small (or ``max_rounds``). No pixel loses its label.
    """
    labels = np.array(label_map, dtype=np.int32, copy=True)
    if min_area <= 1:
        return labels
    height, width = labels.shape
    flat_labels = labels.ravel()
    flat_affinity = affinity.reshape(affinity.shape[0], -1)
    for _ in range(max_rounds):
        regions = _regions(labels).ravel()
        areas = np.bincount(regions)
        small = [int(r) for r in np.argsort(areas, kind="stable") if areas[r] < min_area]
        if not small or len(areas) == 1:
            break
        order = np.argsort(regions, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(areas)])
        changed = False
        for region in small:
            pixels = order[bounds[region] : bounds[region + 1]]
            own = flat_labels[pixels[0]]
            ys, xs = np.divmod(pixels, width)
            neighbours = np.concatenate([
                pixels[xs > 0] - 1, pixels[xs < width - 1] + 1, pixels[ys > 0] - width, pixels[ys < height - 1] + width,
            ])
            options = np.unique(flat_labels[neighbours])
            options = options[options != own]
            if len(options) == 0:
                continue
            means = flat_affinity[np.ix_(options, pixels)].mean(axis=1)
            flat_labels[pixels] = options[int(np.argmax(means))]
            changed = True
        if not changed:
            break
    return labels
