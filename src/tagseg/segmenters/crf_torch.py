"""The fully-connected CRF of Krähenbühl & Koltun (2011) in torch: mean-field inference on any device.

Same model and conventions as pydensecrf's ``DenseCRF2D`` with ``addPairwiseGaussian`` (features
``x/sxy, y/sxy``), ``addPairwiseBilateral`` (``x/sxy, y/sxy, r/srgb, g/srgb, b/srgb``), Potts
compatibilities, the default ``NORMALIZE_SYMMETRIC`` and ``inference``:

* each kernel's filter ``K`` is the permutohedral-lattice Gaussian of Adams, Baek & Davis (2010):
  splat onto the vertices of the enclosing simplex with barycentric weights, blur with ``[1/2, 1, 1/2]``
  along each of the ``d+1`` lattice directions in turn, slice back. Like pydensecrf's, it keeps each
  pixel's own contribution;
* symmetric normalisation: ``n = 1/sqrt(K 1)`` and the filtered message is ``n * K(n * Q)``;
* the update: ``Q <- softmax(-unary + sum_kernels compat * n * K(n * Q))``, starting from
  ``softmax(-unary)``, both kernels from the same ``Q`` (a parallel update).

The lattice of a batch is one lattice whose keys carry the image's index, so images never mix.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PermutohedralLattice", "crf_labels", "dense_crf", "unary_from_scores"]


@dataclass(frozen=True)
class PermutohedralLattice:
    """Splat, blur and slice operators of a permutohedral lattice over points with ``d``-dimensional features.

    ``splat`` (M, P) and ``slice`` (P, M) are sparse CSR matrices: each point has ``d+1`` vertices with
    barycentric weights. ``blurs`` are the ``d+1`` sparse (M, M) blur steps, one per lattice direction.
    """

    splat: torch.Tensor
    slice: torch.Tensor
    blurs: tuple[torch.Tensor, ...]
    dimensions: int

    @classmethod
    def build(cls, features: torch.Tensor, groups: torch.Tensor | None = None) -> PermutohedralLattice:
        """The lattice of points with ``features`` (P, d); points of different ``groups`` (P,) never interact."""
        points, d = features.shape
        device = features.device
        groups = torch.zeros(points, dtype=torch.long, device=device) if groups is None else groups.long()
        elevated = _elevate(features.float())
        rank, remainder0 = _enclosing_simplex(elevated)
        weights = _barycentric(elevated, remainder0, rank)  # (P, d+1)
        offsets = torch.arange(d + 1, device=device)[None, :, None]
        canonical = torch.where(rank[:, None, :d] <= d - offsets, offsets, offsets - d - 1)
        keys = remainder0[:, None, :d] + canonical  # (P, d+1, d): the vertices' first d coordinates
        keys = torch.cat([groups[:, None, None].expand(-1, d + 1, 1), keys], dim=2).reshape(-1, d + 1)
        low = keys.min(dim=0).values - (d + 1)  # room for the blur's neighbours
        spans = keys.max(dim=0).values + (d + 1) - low + 1
        if float(torch.log2(spans.double()).sum()) >= 62:
            raise ValueError("PermutohedralLattice: features span too many lattice cells for 63-bit keys")
        radix = torch.cat([spans.new_ones(1), torch.cumprod(spans.flip(0), dim=0)[:-1]]).flip(0)
        sorted_codes, order = ((keys - low) * radix).sum(dim=1).sort()
        first = torch.ones_like(sorted_codes, dtype=torch.bool)
        first[1:] = sorted_codes[1:] != sorted_codes[:-1]
        codes = sorted_codes[first]  # (M,) one code per vertex, ascending
        size = codes.shape[0]
        vertex = torch.empty_like(order).scatter_(0, order, torch.cumsum(first, dim=0) - 1).reshape(points, d + 1)
        counts = torch.bincount(vertex.reshape(-1), minlength=size)
        splat = _csr(
            F.pad(torch.cumsum(counts, dim=0), (1, 0)), order // (d + 1), weights.reshape(-1)[order], (size, points)
        )
        vertex, by_vertex = vertex.sort(dim=1)
        slice_ = _csr(
            torch.arange(0, points * (d + 1) + 1, d + 1, device=device), vertex.reshape(-1),
            weights.gather(1, by_vertex).reshape(-1), (points, size),
        )
        steps = -torch.ones(d + 1, d + 1, dtype=torch.long, device=device)  # row j: direction j in key coordinates
        steps[:, 0] = 0  # the group never changes
        steps[torch.arange(d, device=device), torch.arange(1, d + 1, device=device)] = d
        queries = codes + (steps @ radix)[:, None]  # (d+1, M): each vertex's neighbour ahead along each direction
        found = torch.searchsorted(codes, queries).clamp_max(size - 1)
        ahead_hit = codes[found] == queries
        blurs = tuple(_blur_matrix(found[j], ahead_hit[j]) for j in range(d + 1))
        return cls(splat, slice_, blurs, d)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Approximate Gaussian filtering of ``values`` (P, V): splat, blur along each direction, slice."""
        lattice_values = self.splat @ values
        for blur in self.blurs:
            lattice_values = blur @ lattice_values
        alpha = 1.0 / (1.0 + 2.0 ** -self.dimensions)  # Adams et al.'s constant, kept for pydensecrf's scale
        return alpha * (self.slice @ lattice_values)


def _blur_matrix(ahead: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """CSR (M, M) of one blur step ``v + (v[ahead] + v[behind]) / 2``; ``hit`` marks vertices whose ``ahead`` exists.

    The neighbour behind a vertex is the one whose neighbour ahead it is.
    """
    size = ahead.shape[0]
    own = torch.arange(size, device=ahead.device)
    behind = torch.full_like(own, size)
    behind[ahead[hit]] = own[hit]
    columns = torch.stack([own, torch.where(hit, ahead, size), behind], dim=1)  # size marks no neighbour
    present = columns < size
    values = torch.tensor([1.0, 0.5, 0.5], device=ahead.device).expand(size, 3)
    rows = F.pad(torch.cumsum(present.sum(dim=1), dim=0), (1, 0))
    return _csr(rows, columns[present], values[present], (size, size))


def _csr(rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix (built correct by construction, so torch's invariant checks are skipped)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(rows, columns, values, size, check_invariants=False)


def _elevate(features: torch.Tensor) -> torch.Tensor:
    """Features (P, d) projected onto the plane ``sum = 0`` of R^(d+1), scaled for a unit-deviation kernel."""
    d = features.shape[1]
    inverse_deviation = math.sqrt(2.0 / 3.0) * (d + 1)
    scale = torch.tensor([inverse_deviation / math.sqrt((i + 2) * (i + 1)) for i in range(d)], device=features.device)
    scaled = features * scale  # (P, d)
    after = torch.cumsum(scaled.flip(1), dim=1).flip(1)  # after[:, i] = sum of scaled[:, i:]
    tail = torch.cat([after[:, 1:], torch.zeros_like(after[:, :1])], dim=1)  # sum of scaled[:, i+1:]
    positions = torch.arange(1, d + 1, device=features.device, dtype=features.dtype)
    return torch.cat([after[:, :1], tail - positions * scaled], dim=1)


def _enclosing_simplex(elevated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each coordinate and the nearest remainder-0 lattice point (both (P, d+1), integer-valued)."""
    count = elevated.shape[1]
    down = elevated * (1.0 / count)  # pydensecrf multiplies by the rounded reciprocal
    up_point, down_point = torch.ceil(down) * count, torch.floor(down) * count
    remainder0 = torch.where(up_point - elevated < elevated - down_point, up_point, down_point)
    excess = torch.div(remainder0.sum(dim=1), count, rounding_mode="floor").long()
    difference = elevated - remainder0
    other, own = difference[:, None, :], difference[:, :, None]  # [p, i, j]: coordinate j against i
    index = torch.arange(count, device=elevated.device)
    before = index[None, :] < index[:, None]  # j < i
    rank = ((other > own) & ~before & (index[None, :] != index[:, None])).sum(dim=2) + ((other >= own) & before).sum(dim=2)
    rank = rank + excess[:, None]
    remainder0 = remainder0.long()
    wrap = (rank < 0).long() - (rank >= count).long()
    return rank + wrap * count, remainder0 + wrap * count


def _barycentric(elevated: torch.Tensor, remainder0: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Barycentric weights (P, d+1) of each point in its simplex (Adams et al. 2010, p. 10)."""
    points, count = elevated.shape
    d = count - 1
    share = (elevated - remainder0.float()) * (1.0 / count)
    weights = torch.zeros(points, count + 1, device=elevated.device)
    weights.scatter_add_(1, d - rank, share)
    weights.scatter_add_(1, d - rank + 1, -share)
    weights[:, 0] += 1.0 + weights[:, count]
    return weights[:, :count]


def _grid_features(height: int, width: int, sxy: float, device: torch.device) -> torch.Tensor:
    """(H*W, 2) pixel positions ``(x/sxy, y/sxy)`` in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([xs.reshape(-1) / sxy, ys.reshape(-1) / sxy], dim=1).float()  # pydensecrf: i / sx


@dataclass(frozen=True)
class _Kernel:
    """One pairwise term: its lattice, symmetric normalisation ``1/sqrt(K 1)`` (P, 1) and Potts weight.

    A ``shared`` kernel's lattice covers one image and serves every image of the batch (the
    position-only kernel depends on the grid alone); otherwise it covers the whole batch.
    """

    lattice: PermutohedralLattice
    normaliser: torch.Tensor
    compat: float
    shared: bool

    @classmethod
    def build(cls, features: torch.Tensor, groups: torch.Tensor | None, compat: float, shared: bool) -> _Kernel:
        lattice = PermutohedralLattice.build(features, groups)
        ones = torch.ones(features.shape[0], 1, device=features.device)
        return cls(lattice, (lattice.filter(ones) + 1e-20).rsqrt(), compat, shared)

    def message(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``compat * n * K(n * Q)`` for ``Q`` (B, N, L)."""
        batch, points, labels = probabilities.shape
        if self.shared:
            values = probabilities.permute(1, 0, 2).reshape(points, batch * labels)
        else:
            values = probabilities.reshape(batch * points, labels)
        filtered = self.compat * self.normaliser * self.lattice.filter(self.normaliser * values)
        if self.shared:
            return filtered.reshape(points, batch, labels).permute(1, 0, 2)
        return filtered.reshape(batch, points, labels)


@functools.lru_cache(maxsize=8)
def _position_kernel(height: int, width: int, sxy: float, compat: float, device: torch.device) -> _Kernel:
    """The position-only (Gaussian) kernel of an ``height`` x ``width`` grid, built once per grid."""
    return _Kernel.build(_grid_features(height, width, sxy, device), None, compat, shared=True)


def dense_crf(
    unary: torch.Tensor,
    images: torch.Tensor,
    *,
    iterations: int = 10,
    gaussian_sxy: float = 1.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 67.0,
    bilateral_srgb: float = 3.0,
    bilateral_compat: float = 4.0,
) -> torch.Tensor:
    """Mean-field marginals (B, L, H, W) of the dense CRF with unary energies ``unary`` (B, L, H, W).

    ``images`` (B, H, W, 3) are the colours of the bilateral kernel (uint8 values, any dtype) on the
    unary's device. The defaults are the paper's constants; see the module docstring for the model.
    """
    batch, labels, height, width = unary.shape
    device = unary.device
    groups = torch.arange(batch, device=device).repeat_interleave(height * width)
    positions = _grid_features(height, width, bilateral_sxy, device).repeat(batch, 1)
    colours = images.reshape(-1, 3).to(device=device, dtype=torch.float32) / bilateral_srgb
    kernels = [
        _position_kernel(height, width, float(gaussian_sxy), float(gaussian_compat), device),
        _Kernel.build(torch.cat([positions, colours], dim=1), groups, bilateral_compat, shared=False),
    ]
    energy = -unary.float().permute(0, 2, 3, 1).reshape(batch, height * width, labels)
    probabilities = torch.softmax(energy, dim=2)
    for _ in range(iterations):
        logits = energy + sum(kernel.message(probabilities) for kernel in kernels)
        probabilities = torch.softmax(logits, dim=2)
    return probabilities.reshape(batch, height, width, labels).permute(0, 3, 1, 2)


def unary_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Stage 1's unary energies from cluster scores (..., L, H, W): ``-log softmax``, probabilities clipped at 1e-5."""
    return -torch.log(torch.softmax(scores.float(), dim=-3).clamp_min(1e-5))


def crf_labels(
    scores: torch.Tensor,
    images: torch.Tensor,
    *,
    scale: float = 1.0,
    min_side: int = 224,
    **crf_options: float,
) -> torch.Tensor:
    """Stage 1's CRF labels (B, H, W) from cluster scores (B, L, H, W) and RGB ``images`` (B, H, W, 3), uint8.

    With ``scale < 1`` the CRF runs on a grid that much smaller, but never with a shorter side than
    ``min_side`` (nor larger than the image): scores and images are resized with antialiasing, both
    spatial deviations scaled alike, and the marginals upsampled bilinearly before the argmax.
    ``crf_options`` are :func:`dense_crf`'s keywords.
    """
    batch, labels, height, width = scores.shape
    factor = min(1.0, max(scale, min_side / min(height, width)))
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if size == (height, width):
        return dense_crf(unary_from_scores(scores), images, **crf_options).argmax(dim=1)
    small_scores = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    small_images = F.interpolate(
        images.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False, antialias=True
    ).round().clamp(0, 255).permute(0, 2, 3, 1)
    spatial = size[1] / width
    options = dict(crf_options)
    options["gaussian_sxy"] = options.get("gaussian_sxy", 1.0) * spatial
    options["bilateral_sxy"] = options.get("bilateral_sxy", 67.0) * spatial
    marginals = dense_crf(unary_from_scores(small_scores), small_images, **options)
    full = F.interpolate(marginals, size=(height, width), mode="bilinear", align_corners=False)
    return full.argmax(dim=1)
