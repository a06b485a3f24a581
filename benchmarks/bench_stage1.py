"""Stage 1 outside the DINOv2 forward: k-means, pixel scores, dense CRF and region work, per option.

Five real photos at 448x448 with real trained features, as in ``bench_crf.py`` (EfficientNet-Lite0
at stride 16 standing in for DINOv2). Each option is timed (best of ``--repeats``, options
interleaved photo by photo) and its CRF labels compared with the reference: pydensecrf on the full
grid, 10 iterations, after faiss k-means (8 restarts, 100 iterations), the labels matched one-to-one
(another k-means numbers its clusters differently). k-means is also timed on
DINOv2-B/14-sized points (32x32 tokens of 768 channels, random), with the inertia against faiss's.

    python benchmarks/bench_stage1.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bench_crf import CLUSTERS, SIZE, feature_extractor, photos, stride16_features
from tagseg import segments as seg
from tagseg.segmenters import kmeans as stage1
from tagseg.config import CRFSettings
from tagseg.segmenters.crf_torch import crf_labels
from tagseg.segmenters.kmeans_torch import kmeans


@dataclass(frozen=True)
class Option:
    """One way to run Stage 1: k-means backend and effort, CRF backend, grid and iterations."""

    kmeans_backend: str  # "faiss" or "torch"
    restarts: int
    kmeans_iterations: int
    crf_backend: str  # "pydensecrf" or "torch"
    crf_side: int  # shorter side of the CRF grid (SIZE: the full grid)
    crf_iterations: int

    @property
    def name(self) -> str:
        return (
            f"{self.kmeans_backend} {self.restarts}x{self.kmeans_iterations} | "
            f"{self.crf_backend} {self.crf_side}px {self.crf_iterations} it"
        )


REFERENCE = Option("faiss", 8, 100, "pydensecrf", SIZE, 10)
OPTIONS = (
    REFERENCE,
    Option("faiss", 8, 100, "torch", SIZE, 10),
    Option("faiss", 8, 100, "pydensecrf", 224, 10),
    Option("faiss", 8, 100, "torch", 224, 10),
    Option("faiss", 8, 100, "pydensecrf", 224, 5),
    Option("torch", 8, 100, "pydensecrf", SIZE, 10),
    Option("torch", 4, 50, "torch", 224, 10),
)


def machine() -> str:
    """CPU model, the vector flags that matter here, torch's kernel level and threads."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in lscpu.splitlines() if line.startswith("Flags")), [])
    shown = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return (
        f"{model} ({os.cpu_count()} cores; flags {' '.join(shown)}), torch {torch.__version__} "
        f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}, {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def best_of(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times), result


def matched_agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Share of pixels with the reference's label after matching the two label sets one-to-one (by overlap)."""
    from scipy.optimize import linear_sum_assignment

    size = int(max(labels.max(), reference.max())) + 1
    overlap = np.bincount(labels.ravel() * size + reference.ravel(), minlength=size * size).reshape(size, size)
    rows, columns = linear_sum_assignment(overlap, maximize=True)
    return float(overlap[rows, columns].sum() / labels.size)


def inertia(points: torch.Tensor, centres: torch.Tensor) -> float:
    return float(torch.cdist(points.double(), centres.double()).min(dim=1).values.pow(2).sum())


def cluster(points: torch.Tensor, option: Option) -> torch.Tensor:
    if option.kmeans_backend == "faiss":
        return stage1.kmeans(points, CLUSTERS, restarts=option.restarts, iterations=option.kmeans_iterations)
    return kmeans(points, CLUSTERS, restarts=option.restarts, max_iter=option.kmeans_iterations).centres


def refine(scores: torch.Tensor, rgb: np.ndarray, option: Option) -> np.ndarray:
    settings = CRFSettings(iterations=option.crf_iterations, scale=option.crf_side / SIZE, min_side=option.crf_side)
    if option.crf_backend == "pydensecrf":
        return stage1.refine_with_crf(scores, rgb, settings)
    constants = {name: getattr(settings, name) for name in (
        "iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat"
    )}
    labels = crf_labels(scores[None], torch.from_numpy(rgb)[None], scale=settings.scale, min_side=option.crf_side, **constants)
    return labels[0].numpy()


def kmeans_on_dinov2_sized_points(repeats: int) -> None:
    points = torch.randn(1024, 768, generator=torch.Generator().manual_seed(0))
    reference = inertia(points, stage1.kmeans(points, CLUSTERS))
    print(f"\nk-means, {CLUSTERS} clusters, 1024 x 768 points (DINOv2-B/14 at 448), ms / inertia vs faiss 8x100")
    for backend, restarts, iterations in [("faiss", 8, 100), ("torch", 8, 100), ("torch", 4, 50), ("faiss", 4, 50)]:
        option = Option(backend, restarts, iterations, "", 0, 0)
        ms, centres = best_of(lambda: cluster(points, option), repeats)
        print(f"  {backend} {restarts}x{iterations}: {ms:7.0f} ms  {inertia(points, centres) / reference:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    kmeans_on_dinov2_sized_points(args.repeats)
    model = feature_extractor()
    images = photos()
    print(f"\n{len(images)} photos at {SIZE}x{SIZE}, {CLUSTERS} clusters, EfficientNet-Lite0 stride-16 features")
    stages = ("kmeans", "scores", "crf", "regions")
    results: dict[Option, list[dict[str, float]]] = {option: [] for option in OPTIONS}
    for name, rgb in images.items():
        features = stride16_features(model, rgb)
        points = features.reshape(-1, features.shape[-1])
        reference_labels = None
        reference_inertia = None
        for option in OPTIONS:
            row: dict[str, float] = {}
            row["kmeans"], centres = best_of(lambda: cluster(points, option), args.repeats)
            row["inertia"] = inertia(points, centres)
            reference_inertia = reference_inertia or row["inertia"]
            row["inertia"] /= reference_inertia
            row["scores"], scores = best_of(lambda: stage1.upsample(stage1.cluster_scores(features, centres), (SIZE, SIZE)), args.repeats)
            row["crf"], labels = best_of(lambda: refine(scores, rgb, option), args.repeats)
            row["regions"], _ = best_of(lambda: seg.compact_labels(labels), args.repeats)
            reference_labels = labels if reference_labels is None else reference_labels
            row["agreement"] = matched_agreement(labels, reference_labels)
            results[option].append(row)
        print(f"  {name} done", flush=True)
    names = list(images)
    print("\nper option: mean ms of " + " / ".join(stages) + " = Stage 1 total; inertia vs faiss 8x100; same label as the reference")
    print(f"{'option':<46}{'stages (ms)':>30}{'total':>8}{'inertia':>9}  " + "".join(f"{n:>10}" for n in names) + f"{'min':>8}")
    for option, rows in results.items():
        means = {stage: np.mean([row[stage] for row in rows]) for stage in stages}
        agreements = [row["agreement"] for row in rows]
        print(
            f"{option.name:<46}{' / '.join(f'{means[s]:.0f}' for s in stages):>30}{sum(means.values()):>8.0f}"
            f"{np.mean([row['inertia'] for row in rows]):>9.4f}  " + "".join(f"{a:>10.2%}" for a in agreements)
            + f"{min(agreements):>8.2%}"
        )


if __name__ == "__main__":
    main()
