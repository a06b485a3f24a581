"""One prepared check of tagseg on an accelerator: batched throughput with Stage 1 in torch, and agreement with the CPU.

Builds the paper's architectures with random weights (DINOv2 ViT-B/14 and CLIP ViT-L/14 with GEM,
saved and loaded through the normal ``from_pretrained`` path) and a text database of ``--entries``
random unit vectors, writes ``--images`` photo-sized images (skimage's photos resized and cropped
to 640x480; synthetic ones without scikit-image), then for each batch size runs
``tagseg segment``'s runner (:func:`tagseg.batch.segment_files`, all files written) with
``kmeans_backend = "torch"`` and ``crf.backend = "torch"`` on ``--device`` and prints images/s
end-to-end, the median milliseconds of each stage (from the written JSON files), the peak GPU
memory (``torch.cuda.max_memory_allocated``) and the images/s of the backbone forwards alone
(:meth:`TAG.forward`, same images and batch size). Then five real photos (or ``--agreement-photos``)
are segmented on the device (torch backends, float32) and on the CPU (float32, the reference
faiss + pydensecrf and the same torch backends): the share of pixels with the same cluster (after
matching the clusters one to one) and with the same name.

    python benchmarks/device_check.py [--device cuda] [--images 64] [--batch-sizes 1,8,16] [--entries 100000]
    python benchmarks/device_check.py --device cpu --images 4 --batch-sizes 1,2   # smoke test

Needs no network. Sized for under 4 minutes on one H100 or H200.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import machine_description, random_models, synthetic_database  # noqa: E402
from tagseg import TAG  # noqa: E402
from tagseg.batch import segment_files  # noqa: E402
from tagseg.result import Segmentation  # noqa: E402

TORCH_STAGE1 = {"kmeans_backend": "torch", "crf": {"backend": "torch"}}
PHOTO_SIZE = (640, 480)


def real_photos(count: int) -> list[np.ndarray]:
    """``count`` RGB photos: skimage's, cycled, else smooth synthetic scenes of the same size."""
    try:
        from skimage import data

        sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    except ImportError:
        rng = np.random.default_rng(0)
        sources = [
            np.array(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(PHOTO_SIZE, Image.Resampling.BICUBIC))
            for _ in range(5)
        ]
    return [photo_sized(sources[index % len(sources)]) for index in range(count)]


def photo_sized(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to cover :data:`PHOTO_SIZE` and centre-cropped to it."""
    width, height = PHOTO_SIZE
    picture = Image.fromarray(image)
    scale = max(width / picture.width, height / picture.height)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BILINEAR)
    left, top = (picture.width - width) // 2, (picture.height - height) // 2
    return np.asarray(picture.crop((left, top, left + width, top + height)))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(tag: TAG, folder: Path, images: list[Path], batch_size: int, device: str) -> dict:
    """End-to-end images/s with files written, stage medians (ms) and peak GPU memory; then forwards-only images/s."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out = folder / f"out-batch{batch_size}"
    start = time.perf_counter()
    report = segment_files(images, out, tag=tag, batch_size=batch_size, ahead=1)
    synchronize(device)
    seconds = time.perf_counter() - start
    timings = [json.loads(path.read_text())["timings"] for path in out.glob("*.json") if path.name != "results.coco.json"]
    stages = {stage: 1000 * statistics.median(t.get(stage, 0.0) for t in timings) for stage in timings[0]}
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    decoded = [tag.decode(path) for path in images]
    start = time.perf_counter()
    for first in range(0, len(decoded), batch_size):
        tag.forward(decoded[first : first + batch_size])
    synchronize(device)
    forwards = len(decoded) / (time.perf_counter() - start)
    return {"images_per_s": len(report.done) / seconds, "failed": len(report.failed), "stages_ms": stages,
            "peak_gpu_gib": peak, "forwards_per_s": forwards}


def agreement(one: Segmentation, other: Segmentation) -> tuple[float, float]:
    """Shares of pixels with the same cluster (clusters matched one to one) and with the same name."""
    first, second = np.unique(one.cluster_map, return_inverse=True)[1], np.unique(other.cluster_map, return_inverse=True)[1]
    confusion = np.zeros((first.max() + 1, second.max() + 1), dtype=np.int64)
    np.add.at(confusion, (first.ravel(), second.ravel()), 1)
    rows, columns = linear_sum_assignment(-confusion)
    same_cluster = confusion[rows, columns].sum() / first.size
    names_one = np.array(one.labels, dtype=object)[one.label_map]
    names_other = np.array(other.labels, dtype=object)[other.label_map]
    return float(same_cluster), float((names_one == names_other).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dtype", default="auto", help="dtype of the throughput runs (agreement runs in float32)")
    parser.add_argument("--agreement-photos", type=int, default=5)
    args = parser.parse_args()
    began = time.perf_counter()
    machine = machine_description()
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none"
    print(f"torch {torch.__version__}; device {args.device} ({gpu}); CPU {machine['cpu']}; load {machine['load_before']:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dinov2, clip = random_models("paper", folder / "models")
        database = synthetic_database(args.entries, 768, clip)
        settings = {"feature_model": str(dinov2), "clip_model": clip, "database": database}
        tag = TAG.from_pretrained("paper", **settings, device=args.device, dtype=args.dtype, **TORCH_STAGE1)
        print(f"models and {args.entries} database entries ready in {time.perf_counter() - began:.0f} s; runs in {tag.models.get('dtype')}")
        paths = []
        for index, photo in enumerate(real_photos(args.images)):
            paths.append(folder / "photos" / f"photo{index:03d}.png")
            paths[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(photo).save(paths[-1])
        tag(np.asarray(Image.open(paths[0]).convert("RGB")))  # warm-up: kernels, spaCy, the vocabulary's embeddings
        print(f"{'batch':>5} {'images/s':>9} {'forwards/s':>11} {'peak GiB':>9}  stage ms (median per image)")
        for batch_size in map(int, args.batch_sizes.split(",")):
            row = throughput(tag, folder, paths, batch_size, args.device)
            stages = " ".join(f"{stage} {ms:.1f}" for stage, ms in row["stages_ms"].items())
            print(f"{batch_size:>5} {row['images_per_s']:>9.2f} {row['forwards_per_s']:>11.2f} {row['peak_gpu_gib']:>9.2f}  {stages}"
                  + (f"  ({row['failed']} failed)" if row["failed"] else ""))
        photos = real_photos(args.agreement_photos)
        on_device = TAG.from_pretrained("paper", **settings, device=args.device, dtype="float32", **TORCH_STAGE1)
        on_cpu = TAG.from_pretrained("paper", **settings, device="cpu", dtype="float32")
        device_results = on_device.finish_batch(on_device.forward(photos))
        forwarded = on_cpu.forward(photos)  # float32 CPU features serve both CPU Stage 1s
        for name, overrides in (("CPU faiss + pydensecrf", {}), ("CPU torch k-means + CRF", TORCH_STAGE1)):
            cpu_results = on_cpu.finish_batch(forwarded, **overrides)
            shares = [agreement(result, cpu_result) for result, cpu_result in zip(device_results, cpu_results)]
            clusters = ", ".join(f"{100 * s[0]:.1f}" for s in shares)
            names = ", ".join(f"{100 * s[1]:.1f}" for s in shares)
            print(f"{args.device} (torch Stage 1, float32) vs {name}: same cluster % {clusters}; same name % {names}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
