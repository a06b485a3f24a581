"""Stage 1 as in the paper: k-means segments of the patch features, refined by a dense CRF.

* :func:`kmeans` — k-means on the patch features, best of several restarts: faiss, or the torch
  k-means of :mod:`tagseg.segmenters.kmeans_torch` (``kmeans_backend``);
  :func:`cluster_centres` with a fixed ``k`` or ``k`` chosen per image (``num_clusters="auto"``) by the
  silhouette or elbow criterion over ``[min_clusters, max_clusters]`` (:func:`choose_num_clusters`);
* :func:`cluster_scores` and :func:`upsample` — every pixel's dot product with every centre, through
  bilinearly upsampled scores;
* :func:`refine_with_crf` — the dense CRF (pydensecrf) on those scores and the working image, or
  the torch CRF of :mod:`tagseg.segmenters.crf_torch` (``crf.backend``);
* :func:`merge_small_regions` — connected regions below a minimum area join their most similar
  adjacent cluster instead of being dropped (regions from :func:`tagseg.masks.connected_components`);
* :func:`kmeans_segments` — all of the above for a batch of images (same-size images batched with
  the torch backends), and :class:`KMeansSegmenter`, the :class:`~tagseg.interfaces.Segmenter`
  registered as ``kmeans``.
"""

from __future__ import annotations

from typing import Any, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from tagseg.config import ClusterSettings, CRFSettings
from tagseg.interfaces import SegmenterInput, Segments
from tagseg.masks import connected_components
from tagseg.segmenters import crf_torch, kmeans_torch
from tagseg.segments import compact_labels
from tagseg.timing import timed, timed_shared

__all__ = [
    "KMeansSegmenter",
    "choose_num_clusters",
    "cluster_centres",
    "cluster_scores",
    "kmeans",
    "kmeans_segments",
    "merge_small_regions",
    "refine_with_crf",
    "silhouette",
    "upsample",
]


class KMeansSegmenter:
    """The paper's Stage 1 (``segmenter="kmeans"``): :func:`kmeans_segments` of a batch's patch features."""

    def needs_patch_features(self, clusters: ClusterSettings) -> bool:
        """Always: k-means clusters the patch features of every image."""
        return True

    def segment(self, images: Sequence[SegmenterInput], clusters: ClusterSettings) -> list[Segments]:
        """Each image's compact cluster map at the working size, with its original cluster ids."""
        outputs = kmeans_segments(
            [image.working for image in images], [image.patch_features() for image in images],
            clusters, [image.timings for image in images],
        )
        return [Segments(*output) for output in outputs]


def kmeans_segments(
    workings: Sequence[np.ndarray],
    features: Sequence[torch.Tensor],
    clusters: ClusterSettings,
    timings: Sequence[dict[str, float]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-means on each image's patch ``features`` (h, w, C), CRF on its ``working`` image, small regions merged.

    Images of the same size go through each step together: with ``kmeans_backend="torch"`` one
    batched k-means (per k tried with ``num_clusters="auto"``), with ``crf.backend="torch"`` one
    batched CRF (per number of clusters), on the features' device. Returns each image's compact cluster map at the working size and each label's original
    cluster; adds the ``kmeans``, ``crf`` and ``regions`` stages to its ``timings`` (a batched
    step's time shared equally).
    """
    outputs: list[tuple[np.ndarray, np.ndarray]] = [None] * len(workings)  # type: ignore[list-item]
    groups: dict[tuple, list[int]] = {}
    for index, (working, image_features) in enumerate(zip(workings, features)):
        groups.setdefault((working.shape, tuple(image_features.shape)), []).append(index)
    for group in groups.values():
        group_timings = [timings[i] for i in group]
        with timed_shared(group_timings, "kmeans"):
            points = [features[i].reshape(-1, features[i].shape[-1]) for i in group]
            centres = _group_centres(points, clusters)
            scores = [
                upsample(cluster_scores(features[i], image_centres), workings[i].shape[:2])
                for i, image_centres in zip(group, centres)
            ]
        with timed_shared(group_timings, "crf"):
            cluster_maps = _group_labels(scores, [workings[i] for i in group], clusters.crf)
        for i, cluster_map, image_scores in zip(group, cluster_maps, scores):
            with timed(timings[i], "regions"):
                height, width = cluster_map.shape
                min_area = round(clusters.min_region_area * height * width)
                merged = merge_small_regions(cluster_map, image_scores.float().cpu().numpy(), min_area)
                outputs[i] = compact_labels(merged)
    return outputs


def _group_centres(points: Sequence[torch.Tensor], clusters: ClusterSettings) -> list[torch.Tensor]:
    """Each same-size image's k-means centres: with the torch backend one batched k-means (per k
    tried when ``num_clusters="auto"``), else :func:`cluster_centres` image by image."""
    if clusters.kmeans_backend != "torch":
        return [cluster_centres(image_points, clusters) for image_points in points]
    options = _kmeans_options(clusters)
    if clusters.num_clusters != "auto":
        return list(kmeans(torch.stack(points), int(clusters.num_clusters), **options))
    choices = _choose_num_clusters(
        torch.stack(points), clusters.min_clusters, clusters.max_clusters, clusters.cluster_criterion, **options
    )
    return [centres for _, centres, _ in choices]


_CRF_CONSTANTS = ("iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")
"""The CRF settings that :func:`tagseg.segmenters.crf_torch.crf_labels` takes by the same name."""


def _group_labels(scores: Sequence[torch.Tensor], workings: Sequence[np.ndarray], crf: CRFSettings) -> list[np.ndarray]:
    """Each image's cluster map (H, W) int32 from its scores (K, H, W): the CRF (one batched call per
    number of clusters with the torch backend), or the argmax when the CRF is off."""
    if not crf.enabled:
        return [image_scores.argmax(dim=0).cpu().numpy().astype(np.int32) for image_scores in scores]
    if crf.backend == "pydensecrf":
        return [refine_with_crf(image_scores.cpu(), working, crf) for image_scores, working in zip(scores, workings)]
    labels: list[np.ndarray] = [None] * len(scores)  # type: ignore[list-item]
    by_count: dict[int, list[int]] = {}
    for index, image_scores in enumerate(scores):
        by_count.setdefault(image_scores.shape[0], []).append(index)
    for indices in by_count.values():
        batch_scores = torch.stack([scores[i] for i in indices])
        images = torch.stack([torch.from_numpy(np.ascontiguousarray(workings[i])) for i in indices]).to(batch_scores.device)
        constants = {name: getattr(crf, name) for name in _CRF_CONSTANTS}
        batch_labels = crf_torch.crf_labels(batch_scores, images, scale=crf.scale, min_side=crf.min_side, **constants)
        batch_labels = batch_labels.cpu().numpy().astype(np.int32)
        for position, i in enumerate(indices):
            labels[i] = batch_labels[position]
    return labels


def cluster_centres(points: torch.Tensor, clusters: ClusterSettings) -> torch.Tensor:
    """k-means centres of ``points`` (N, C): ``clusters.num_clusters`` of them, or the automatic choice."""
    options = _kmeans_options(clusters)
    if clusters.num_clusters != "auto":
        return kmeans(points, int(clusters.num_clusters), **options)
    _, centres, _ = choose_num_clusters(
        points, clusters.min_clusters, clusters.max_clusters, clusters.cluster_criterion, **options
    )
    return centres


def _kmeans_options(clusters: ClusterSettings) -> dict[str, Any]:
    """:func:`kmeans`'s keywords from the cluster settings."""
    return {
        "restarts": clusters.kmeans_restarts, "iterations": clusters.kmeans_iterations, "seed": clusters.seed,
        "backend": clusters.kmeans_backend,
    }


def kmeans(
    features: torch.Tensor,
    num_clusters: int,
    *,
    restarts: int = 8,
    iterations: int = 100,
    seed: int = 0,
    backend: str = "faiss",
) -> torch.Tensor:
    """Euclidean k-means over the rows of ``features`` (N, C), or of each point set of a batch
    (B, N, C); the centres (k, C) or (B, k, C) of the best of ``restarts`` runs.

    ``backend``: ``"faiss"`` (on the CPU, image by image) or ``"torch"``
    (:func:`tagseg.segmenters.kmeans_torch.kmeans`, on the features' device, a batch at once); the
    centres are on the features' device. Deterministic for a given ``seed``, and an image's centres
    do not depend on the batch. Fewer points than clusters gives one centre per point.
    """
    if backend == "torch":
        return kmeans_torch.kmeans(features, num_clusters, restarts=restarts, max_iter=iterations, seed=seed).centres
    if features.dim() == 3:
        options = {"restarts": restarts, "iterations": iterations, "seed": seed}
        return torch.stack([kmeans(points, num_clusters, **options) for points in features])
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
    return torch.from_numpy(clustering.centroids.copy()).to(features.device)


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
    """Dense-CRF labels (H, W) with pydensecrf from pixel scores (K, H, W) and the RGB uint8 image (H, W, 3).

    The unary is minus the log softmax of the scores over clusters, probabilities clipped at 1e-5.
    With ``settings.scale < 1`` the CRF runs on a grid that much smaller, its shorter side never
    below ``settings.min_side`` (scores and image resized with antialiasing, both spatial standard
    deviations scaled alike) and its marginals are upsampled bilinearly before the argmax at full
    size; ``scale=1`` is the reference's full-size CRF.
    """
    num_labels, height, width = scores.shape
    factor = min(1.0, max(settings.scale, settings.min_side / min(height, width)))
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
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


_SILHOUETTE_SAMPLE = 1024


def choose_num_clusters(
    points: torch.Tensor, min_k: int, max_k: int, criterion: str = "silhouette", **kmeans_options: Any
) -> tuple[int, torch.Tensor, dict[int, float]]:
    """Run k-means for every k in ``[min_k, max_k]`` on ``points`` (N, C) and keep the best k.

    ``silhouette``: the highest mean silhouette (Euclidean, on up to 1024 sampled points).
    ``elbow``: the k whose inertia lies furthest below the straight line joining the first and last
    k's inertia (the knee of the curve). Returns ``(k, centres, {k: criterion value})``.
    Costs one k-means run (with its restarts) per k in the range.
    """
    return _choose_num_clusters(points[None], min_k, max_k, criterion, **kmeans_options)[0]


def _choose_num_clusters(
    points: torch.Tensor, min_k: int, max_k: int, criterion: str, **kmeans_options: Any
) -> list[tuple[int, torch.Tensor, dict[int, float]]]:
    """:func:`choose_num_clusters` of each point set of a batch (B, N, C), one :func:`kmeans` call per k."""
    points = points.float()
    max_k = max(min_k, min(max_k, points.shape[1] - 1))
    samples = points
    if points.shape[1] > _SILHOUETTE_SAMPLE:
        generator = torch.Generator().manual_seed(int(kmeans_options.get("seed", 0)))
        samples = points[:, torch.randperm(points.shape[1], generator=generator)[:_SILHOUETTE_SAMPLE].to(points.device)]
    fits: dict[int, torch.Tensor] = {}
    values: list[dict[int, float]] = [{} for _ in points]
    for k in range(min_k, max_k + 1):
        fits[k] = kmeans(points, k, **kmeans_options)
        for image_values, image_points, sample, centres in zip(values, points, samples, fits[k]):
            if criterion == "silhouette":
                image_values[k] = silhouette(sample, torch.cdist(sample, centres).argmin(dim=1))
            else:
                image_values[k] = float(torch.cdist(image_points, centres).min(dim=1).values.pow(2).sum())
    choices = []
    for image, image_values in enumerate(values):
        best = max(image_values, key=lambda k: image_values[k]) if criterion == "silhouette" else _knee(image_values)
        choices.append((best, fits[best][image], image_values))
    return choices


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
