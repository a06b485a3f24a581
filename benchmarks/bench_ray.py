"""The Ray engine against the local engine on this machine: images/s, start-up and overhead per image; db build texts/s.

Segments toy-world images (or, with ``--real``, real photos with random-weight models of the
``fast`` preset's sizes: DINOv2-S/14 and CLIP-B/16) with the local engine and with Ray at 1 and 2
workers, each run into a fresh output folder, and builds a database of synthetic captions with a
random CLIP text tower locally and on Ray. For each segmentation run it prints the wall time, the
time to the first finished image (models loading in the workers), the rate after it, and the
overhead per image of one Ray worker over the local engine at that steady rate. The local engine
runs with ``--local-threads`` torch and OpenMP (faiss) threads, default 1: what Ray gives each
worker with one CPU (it sets ``OMP_NUM_THREADS``), so that the comparison is of the engines, not
of thread counts.

    python benchmarks/bench_ray.py [--images 40] [--texts 20000] [--local-threads 1] [--real]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import ray
import skimage.data
import torch
from PIL import Image

from tagseg.batch import BatchListener, segment_files
from tagseg.output_layout import ImageOutcome
from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.config import preset
from tagseg.database import build_database
from tagseg.engines.ray import segment_with_ray
from tagseg.engines.ray_database import build_database_with_ray
from tagseg.testing import save_random_clip, save_random_dinov2
from tagseg.toy import toy_scene

WORDS = "cat dog car tree sky road grass house bird horse sheep cow boat train bus bottle chair table sofa plant".split()


class Clock(BatchListener):
    """When the run started and when each image came back."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.finished: list[float] = []

    def image_finished(self, outcome: ImageOutcome) -> None:
        self.finished.append(time.perf_counter())

    def summary(self, count: int) -> tuple[float, float, float]:
        """(wall s, s to the first image, images/s after the first)."""
        wall = self.finished[-1] - self.start
        first = self.finished[0] - self.start
        rate = (count - 1) / (self.finished[-1] - self.finished[0]) if count > 1 else float("nan")
        return wall, first, rate


def captions(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"a photo of a {' and a '.join(rng.choice(WORDS, size=2))} #{i}" for i in range(count)]


def write_images(folder: Path, count: int, real: bool) -> list[str]:
    folder.mkdir(parents=True)
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    for i in range(count):
        pixels = photos[i % len(photos)] if real else toy_scene(i, size=(240, 320))[0]
        Image.fromarray(pixels).save(folder / f"image{i:04d}.png")
    return sorted(str(p) for p in folder.glob("*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1, help="images per backbone forward, on both engines")
    parser.add_argument("--local-threads", type=int, default=1, help="torch threads of the local engine")
    parser.add_argument("--real", action="store_true", help="fast-preset sizes with random weights instead of the toy world")
    args = parser.parse_args()
    torch.set_num_threads(args.local_threads)
    faiss.omp_set_num_threads(args.local_threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = save_random_clip(root / "clip", "base-16" if args.real else "tiny")
        source = root / "captions.txt"
        source.write_text("\n".join(captions(args.texts)) + "\n", encoding="utf-8")
        if args.real:
            save_random_dinov2(root / "dino", "small")
            encoder = CLIPTextEncoder.from_pretrained(clip)
            build_database(root / "names", [source], encoder, progress=False)
            config = preset("fast", feature_model=str(root / "dino"), clip_model=str(clip), database=str(root / "names"))
        else:
            config = preset("toy")
        inputs = write_images(root / "images", args.images, args.real)

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(f"ray.init (local runtime, 2 CPUs): {time.perf_counter() - started:.1f} s")
        print(f"\nsegmentation, {args.images} {'real photos, fast-preset sizes' if args.real else 'toy images'}:")
        print(f"{'engine':<16}{'wall s':>8}{'first s':>9}{'img/s':>8}{'img/s after first':>19}")
        rates = {}
        for label, workers in (("local", 0), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
            clock = Clock()
            out = root / f"out-{workers}"
            if workers:
                segment_with_ray(inputs, out, config=config, workers=workers, batch_size=args.batch_size, listener=clock)
            else:
                segment_files(inputs, out, config=config, listener=clock, batch_size=args.batch_size)
            wall, first, rate = clock.summary(args.images)
            rates[workers] = rate
            print(f"{label:<16}{wall:>8.1f}{first:>9.1f}{args.images / wall:>8.2f}{rate:>19.2f}")
        print(f"overhead per image, 1 Ray worker vs local at the steady rate: {1000 * (1 / rates[1] - 1 / rates[0]):.1f} ms")

        print(f"\ndb build, {args.texts} texts, random CLIP {'B/16' if args.real else 'tiny'} text tower:")
        encoder = CLIPTextEncoder.from_pretrained(clip)
        started = time.perf_counter()
        build_database(root / "db-local", [source], encoder, progress=False)
        local = args.texts / (time.perf_counter() - started)
        print(f"{'local':<16}{local:>10.0f} texts/s")
        for workers in (1, 2):
            run = build_database_with_ray(root / f"db-ray-{workers}", [source], str(clip), workers=workers, progress=False)
            print(f"{f'ray, {workers} worker(s)':<16}{run.texts_per_second:>10.0f} texts/s, {run.texts_per_second_per_worker:.0f} per worker (actors started before timing)")
        ray.shutdown()


if __name__ == "__main__":
    main()
