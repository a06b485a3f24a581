"""Time the paper-size backbones with random weights: DINOv2-B/14, CLIP-L/14 (plain and every dense method), text tower.

Run: ``python benchmarks/bench_backbones.py [--size 448] [--repeats 3]``. Prints milliseconds
(wall and process CPU time), the minimum over the repeats, batch 1; CLIP-L/14 in float32 and
bfloat16. ProxyCLIP is timed given the DINOv2 features (Stage 1 computes them anyway). The models
are written to a temporary directory first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from tagseg.backbones.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIPTextEncoder, DenseCLIP
from tagseg.backbones.dense_methods import DENSE_METHODS
from tagseg.backbones.dinov2 import Dinov2Features
from tagseg.testing import TINY_VOCABULARY_WORDS, save_random_clip, save_random_dinov2


def best_times(repeats: int, works: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float]]:
    """Minimum wall time and minimum process CPU time of each work over ``repeats`` rounds, in ms.

    The works run interleaved, round after round, so that load from other processes on a shared
    machine hits them alike; CPU time is the steadier measure of work on such a machine.
    """
    best = {name: (float("inf"), float("inf")) for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            wall, cpu = time.perf_counter(), time.process_time()
            work()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall * 1000), min(best[name][1], cpu * 1000))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=448, help="square input size in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}x{args.size}, batch 1")

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        dinov2 = Dinov2Features.from_pretrained(save_random_dinov2(root / "dinov2-base", size="base"))
        clip_dir = save_random_clip(root / "clip-large-14", size="large-14")
        text = CLIPTextEncoder.from_pretrained(clip_dir)

        pixels = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD))
        clip_pixels = (pixels - mean) / std
        proxy_features = dinov2(pixels)
        # Words of the test vocabulary are one token each, like most single words in CLIP's real vocabulary.
        words = [TINY_VOCABULARY_WORDS[index % len(TINY_VOCABULARY_WORDS)] for index in range(100)]

        works: dict[str, Callable[[], object]] = {"DINOv2-B/14 forward": lambda: dinov2(pixels)}
        for dtype, dtype_name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            model = DenseCLIP.from_pretrained(clip_dir, dtype=dtype).model  # one model shared by every method
            embedders = {name: DenseCLIP(model, model_id=str(clip_dir), method=name) for name in DENSE_METHODS}

            def plain_clip(model: torch.nn.Module = model, dtype: torch.dtype = dtype) -> None:
                with torch.inference_mode():
                    model(pixel_values=clip_pixels.to(dtype), interpolate_pos_encoding=True)

            works[f"CLIP-L/14 vision forward, {dtype_name}"] = plain_clip
            for name, embedder in embedders.items():
                works[f"CLIP-L/14 + {name}, {dtype_name}"] = partial(embedder, pixels, proxy_features=proxy_features)
        works["CLIP-L/14 text, 100 words"] = lambda: text.encode(words)

        timings = best_times(args.repeats, works)
        for name, (wall, cpu) in timings.items():
            print(f"{name + ':':36s}{wall:8.0f} ms wall {cpu:8.0f} ms CPU")


if __name__ == "__main__":
    main()
