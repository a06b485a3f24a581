"""Euclidean k-means in torch, on the points' own device: every image and every restart at once.

:func:`kmeans` clusters a batch of point sets ``(B, N, C)``; the restarts of all images run in the
same batched matrix products, and the restart with the lowest inertia is kept per image. Each
image draws its initial centres from a generator seeded with ``seed`` alone, so an image gives
the same clustering in any batch as it does by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["KMeansResult", "kmeans"]


@dataclass(frozen=True)
class KMeansResult:
    """The kept restart of each image: ``centres`` (B, k, C), ``labels`` (B, N) and ``inertia`` (B,).

    ``inertia`` is the sum over points of the squared distance to their centre.
    """

    centres: torch.Tensor
    labels: torch.Tensor
    inertia: torch.Tensor


def kmeans(
    points: torch.Tensor,
    k: int,
    *,
    restarts: int = 8,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    init: str = "random",
) -> KMeansResult:
    """Lloyd's k-means of each image's points (B, N, C) or of one point set (N, C), keeping the best restart.

    ``init``: ``"random"`` (k distinct points, as faiss starts) or ``"kmeans++"``. A run stops after
    ``max_iter`` assignment steps, or earlier once no restart of any image moves its centres by more
    than ``tol`` times the points' mean variance (squared shift summed over centres, as scikit-learn).
    An emptied cluster restarts at the point furthest from its centre. ``k`` is capped at ``N``.
    A 2-D input gives a result without the batch dimension.
    """
    if init not in ("random", "kmeans++"):
        raise ValueError(f"kmeans: init must be 'random' or 'kmeans++', not {init!r}")
    single = points.dim() == 2
    batch = points[None] if single else points
    batch = batch.float()
    k = min(k, batch.shape[1])
    centres = _initial_centres(batch, k, restarts, seed, init)  # (B, R, k, C)
    threshold = tol * batch.var(dim=1).mean(dim=1)  # (B,)
    norms = batch.pow(2).sum(dim=2)  # (B, N)
    for _ in range(max_iter):
        labels, _ = _assign(batch, norms, centres)
        updated = _refit(batch, centres, labels)
        shift = (updated - centres).pow(2).sum(dim=(2, 3))  # (B, R)
        centres = updated
        if bool((shift <= threshold[:, None]).all()):
            break
    labels, distances = _assign(batch, norms, centres)
    inertia = distances.sum(dim=2)  # (B, R)
    best = inertia.argmin(dim=1)
    rows = torch.arange(batch.shape[0], device=batch.device)
    result = KMeansResult(centres[rows, best], labels[rows, best], inertia[rows, best])
    if single:
        return KMeansResult(result.centres[0], result.labels[0], result.inertia[0])
    return result


def _initial_centres(points: torch.Tensor, k: int, restarts: int, seed: int, init: str) -> torch.Tensor:
    """(B, R, k, C) starting centres; each image's draws come from its own generator seeded with ``seed``."""
    generator = torch.Generator(device=points.device)
    starts = []
    for image in points:
        generator.manual_seed(seed)
        if init == "random":
            order = torch.rand(restarts, image.shape[0], generator=generator, device=points.device).argsort(dim=1)
            starts.append(image[order[:, :k]])
        else:
            starts.append(_kmeans_plus_plus(image, k, restarts, generator))
    return torch.stack(starts)


def _kmeans_plus_plus(points: torch.Tensor, k: int, restarts: int, generator: torch.Generator) -> torch.Tensor:
    """(R, k, C) centres chosen by k-means++ (each next centre drawn with probability ~ squared distance)."""
    count = points.shape[0]
    first = torch.randint(count, (restarts,), generator=generator, device=points.device)
    chosen = [points[first]]  # each (R, C)
    nearest = (points[None] - chosen[0][:, None]).pow(2).sum(dim=2)  # (R, N)
    for _ in range(1, k):
        weights = nearest.clamp_min(0) + 1e-12 * (nearest.sum(dim=1, keepdim=True) == 0)
        pick = torch.multinomial(weights, 1, generator=generator)[:, 0]
        chosen.append(points[pick])
        nearest = torch.minimum(nearest, (points[None] - chosen[-1][:, None]).pow(2).sum(dim=2))
    return torch.stack(chosen, dim=1)


def _assign(points: torch.Tensor, norms: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every point for every restart: labels (B, R, N) and squared distances (B, R, N).

    ``norms`` (B, N) are the points' squared norms.
    """
    batch, restarts, k, channels = centres.shape
    flat = centres.reshape(batch, restarts * k, channels)
    offset = torch.baddbmm(flat.pow(2).sum(dim=2)[:, None, :], points, flat.transpose(1, 2), alpha=-2)  # (B, N, R*k)
    nearest, labels = offset.reshape(batch, -1, restarts, k).min(dim=3)
    distances = (nearest + norms[..., None]).clamp_min(0)
    return labels.transpose(1, 2), distances.transpose(1, 2)


def _refit(points: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Centres (B, R, k, C) as the means of their points; an empty cluster takes the worst-fitted point."""
    batch, restarts, k, channels = centres.shape
    counts = torch.nn.functional.one_hot(labels, k).sum(dim=2).to(points.dtype)  # (B, R, k)
    if points.device.type == "cpu":  # sums in a fixed order at N*C cost
        slots = (torch.arange(batch * restarts, device=points.device).reshape(batch, restarts, 1) * k + labels).reshape(-1)
        sources = points[:, None].expand(-1, restarts, -1, -1).reshape(-1, channels)
        sums = points.new_zeros(batch * restarts * k, channels).index_add_(0, slots, sources)
    else:  # atomics would make GPU sums vary from run to run: a one-hot product instead
        onehot = torch.nn.functional.one_hot(labels, k).to(points.dtype).transpose(2, 3)  # (B, R, k, N)
        sums = torch.bmm(onehot.reshape(batch, restarts * k, -1), points)
    sums = sums.reshape(batch, restarts, k, channels)
    updated = sums / counts.clamp_min(1)[..., None]
    empty = counts == 0
    if bool(empty.any()):
        own = centres.gather(2, labels[..., None].expand(-1, -1, -1, channels))  # (B, R, N, C)
        misfit = (points[:, None] - own).pow(2).sum(dim=3)  # (B, R, N)
        worst = misfit.topk(k, dim=2).indices  # (B, R, k): furthest points first
        rank = empty.long().cumsum(dim=2) - 1  # the i-th empty cluster takes the i-th furthest point
        replacement = points[torch.arange(batch, device=points.device)[:, None, None], worst.gather(2, rank.clamp_min(0))]
        updated = torch.where(empty[..., None], replacement, updated)
    return updated
