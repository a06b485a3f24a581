"""How far bfloat16 is from float32, and what each costs in memory, on real-size random models.

For DINOv2 ViT-B/14 and CLIP ViT-L/14 + GEM (random weights, real architectures): peak RSS of
loading each backbone alone in a fresh process, and per-patch cosine between the float32 and the
bfloat16 outputs on real photos at 448x448. Then the whole paper preset in both types on the
same photos (synthetic database): share of pixels with the same cluster and with the same name.

    python benchmarks/bench_precision.py [--photos 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

LOAD = """
import sys
from bench_pipeline import peak_rss_gib
from tagseg.backbones.{module} import {cls}
before = peak_rss_gib()
model = {cls}.from_pretrained(sys.argv[1], dtype=sys.argv[2])
print(before, peak_rss_gib())
"""


def peak_rss_mib(module: str, cls: str, directory: Path, dtype: str) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh process after imports, and after loading the backbone in ``dtype``.

    Read from ``VmHWM``: ``resource.getrusage``'s ``ru_maxrss`` keeps the parent's peak across ``exec``.
    """
    code = LOAD.format(module=module, cls=cls)
    output = subprocess.run(
        [sys.executable, "-c", code, str(directory), dtype], capture_output=True, text=True, check=True,
        cwd=Path(__file__).parent,
    )
    before, after = (float(value) * 1024 for value in output.stdout.split()[-2:])
    return before, after


def same_cluster_share(first: np.ndarray, second: np.ndarray) -> float:
    """Share of pixels whose clusters correspond under the best one-to-one matching of cluster ids."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((first.max() + 1, second.max() + 1), dtype=np.int64)
    np.add.at(overlap, (first.ravel(), second.ravel()), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / first.size)


def photos(count: int) -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--skip-pipeline", action="store_true", help="only memory and embedding cosine")
    args = parser.parse_args()
    from bench_pipeline import synthetic_database

    from tagseg import TAG
    from tagseg.backbones.clip import GEMDenseCLIP
    from tagseg.backbones.dinov2 import Dinov2Features
    from tagseg.preprocess import fit_to_patches
    from tagseg.testing import save_random_clip, save_random_dinov2

    with tempfile.TemporaryDirectory() as tmp:
        dinov2 = save_random_dinov2(Path(tmp) / "dinov2-base", "base")
        clip = save_random_clip(Path(tmp) / "clip-large-14", "large-14")
        print("\npeak RSS of loading one backbone in a fresh process (MiB: after imports -> after load)")
        for module, cls, directory in (("dinov2", "Dinov2Features", dinov2), ("clip", "GEMDenseCLIP", clip)):
            for dtype in ("float32", "bfloat16"):
                before, after = peak_rss_mib(module, cls, directory, dtype)
                print(f"  {cls:<15} {dtype:<9} {before:7.0f} -> {after:7.0f}  (+{after - before:.0f})")

        images = photos(args.photos)
        print("\nper-patch cosine, bfloat16 vs float32 (min / mean over patches of all photos)")
        for cls, directory in ((Dinov2Features, dinov2), (GEMDenseCLIP, clip)):
            outputs = {}
            for dtype in ("float32", "bfloat16"):
                backbone = cls.from_pretrained(directory, dtype=dtype)
                batch = torch.stack([torch.from_numpy(_resized(image)).permute(2, 0, 1).float() / 255 for image in images])
                outputs[dtype] = backbone(fit_to_patches(batch, backbone.patch_size)).flatten(0, 2)
                del backbone
            cosine = torch.nn.functional.cosine_similarity(outputs["float32"], outputs["bfloat16"], dim=-1)
            print(f"  {cls.__name__:<15} min {cosine.min():.5f}  mean {cosine.mean():.5f}")

        if args.skip_pipeline:
            return
        database = synthetic_database(20_000, 768, str(clip))
        results = {}
        for dtype in ("float32", "bfloat16"):
            tag = TAG.from_pretrained("paper", feature_model=str(dinov2), clip_model=str(clip), database=database, dtype=dtype)
            results[dtype] = [tag(image) for image in images]
            del tag
        print("\npaper preset, bfloat16 vs float32, per photo: same cluster / same name (share of pixels)")
        for index, (full, half) in enumerate(zip(results["float32"], results["bfloat16"])):
            same_cluster = same_cluster_share(full.cluster_map, half.cluster_map)
            names_full = np.array([s.label for s in full.segments])[full.label_map]
            names_half = np.array([s.label for s in half.segments])[half.label_map]
            print(f"  photo {index}: {same_cluster:.1%} / {float(np.mean(names_full == names_half)):.1%}")


def _resized(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((448, 448), Image.Resampling.BILINEAR))


if __name__ == "__main__":
    main()
