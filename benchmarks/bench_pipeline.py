"""Time each TAG stage at the paper (or fast) preset with real-size architectures (random weights) on this machine.

Builds DINOv2 ViT-B/14 and CLIP ViT-L/14 with random weights in a temporary directory, a text
database of 100k random unit vectors with synthetic captions, and segments a real photo several
times. Prints milliseconds per stage (median over the timed runs, after one warm-up run) and the
share of time spent outside the two backbone forwards.

    python benchmarks/bench_pipeline.py [--preset paper|fast] [--runs 3] [--entries 100000] [--crf/--no-crf]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tagseg import TAG
from tagseg.database import InMemoryTextDatabase
from tagseg.testing import save_random_clip, save_random_dinov2

WORDS = (
    "cat dog car person horse sheep cow bird boat train bus bottle chair table sofa plant tree sky road "
    "grass water building wall floor window door street field mountain beach snow bicycle kite umbrella"
).split()


ARCHITECTURES = {"paper": ("base", "large-14", 768), "fast": ("small", "base-16", 512)}
"""Random-weight stand-ins of each preset's models: DINOv2 size, CLIP size, joint-space dimension."""


def synthetic_database(entries: int, dim: int, model_id: str, seed: int = 0) -> InMemoryTextDatabase:
    """Random unit vectors labelled with short captions drawn from a word list."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((entries, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(WORDS), size=(entries, 3))
    texts = [f"a {WORDS[a]} and a {WORDS[b]} near the {WORDS[c]} #{i}" for i, (a, b, c) in enumerate(picks)]
    return InMemoryTextDatabase(texts, vectors, model_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--preset", choices=sorted(ARCHITECTURES), default="paper")
    args = parser.parse_args()

    from skimage import data

    image = data.astronaut()
    with tempfile.TemporaryDirectory() as tmp:
        dinov2_size, clip_size, dim = ARCHITECTURES[args.preset]
        dinov2 = save_random_dinov2(Path(tmp) / f"dinov2-{dinov2_size}", dinov2_size)
        clip = save_random_clip(Path(tmp) / f"clip-{clip_size}", clip_size)
        database = synthetic_database(args.entries, dim, str(clip))
        tag = TAG.from_pretrained(
            args.preset, feature_model=str(dinov2), clip_model=str(clip), crf=args.crf, database=database
        )
    print(f"preset {args.preset}: {dinov2.name}, {clip.name} (random weights)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; image {image.shape[1]}x{image.shape[0]}")
    print(f"database: {len(database)} entries, dim {database.dim}")

    start = time.perf_counter()
    cold = tag(image)
    print(f"first run (cold caches): {1000 * (time.perf_counter() - start):.0f} ms, naming {1000 * cold.timings['naming']:.0f} ms")
    runs = [tag(image).timings for _ in range(args.runs)]
    stages = list(runs[0])
    median = {stage: 1000 * statistics.median(run[stage] for run in runs) for stage in stages}
    total = sum(median.values())
    print(f"\n{'stage':<12}{'ms':>10}{'share':>9}")
    for stage in stages:
        print(f"{stage:<12}{median[stage]:>10.1f}{median[stage] / total:>9.1%}")
    backbones = median["features"] + median["embedder"]
    print(f"{'total':<12}{total:>10.1f}")
    print(f"\noutside the two backbone forwards: {total - backbones:.0f} ms = {(total - backbones) / total:.1%} (target <= 15%)")


if __name__ == "__main__":
    main()
