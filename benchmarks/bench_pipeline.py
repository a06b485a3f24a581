"""Time each TAG stage at the paper (fast, proxyclip, talk2dino) preset with real-size architectures (random weights) on this machine.

Builds DINOv2 ViT-B/14 and CLIP ViT-L/14 (talk2dino: DINOv2 ViT-B/14 with registers, CLIP ViT-B/16's
text tower and the projection) with random weights in a temporary directory and a text
database of 100k random unit vectors with synthetic captions, then, for float32 and the
configuration's default dtype, each in a fresh process: segments real photos (one warm-up, then
``--runs`` rounds over the photos) and prints milliseconds per stage (median), seconds per image,
the plain DINOv2 and CLIP vision forwards measured in the same process, the ratio of end-to-end
to the sum of the two plain forwards, the peak resident memory (``VmHWM``: ``ru_maxrss`` would
carry the parent's peak across ``exec``) and the naming cost of the first image (spaCy loads).
In the default dtype's process it then runs ``tagseg segment``'s runner (:func:`tagseg.batch.segment_files`)
on a folder of ``--folder`` real photos (skimage's, cycled, at their own sizes) and prints its
images/s for each ``--batch-size`` (default 1 and 8: images per forward and per finished batch),
once with the forwards of the next batch overlapping the current one's CPU stages and once
without (``--ahead``), then the peak resident memory after those runs; ``--preset toy`` measures
only that, with the toy world. Several presets
(``--preset paper talk2dino``) run one after the other and end with each one's s/image relative to the first.

    python benchmarks/bench_pipeline.py [--preset paper|fast|proxyclip|talk2dino|toy ...] [--runs 2] [--entries 100000]
        [--crf/--no-crf] [--folder 20] [--batch-size 1 8] [--ahead 1 0] [--no-float32] [--json bench.json]

``--json`` also writes the results with the command, the CPU (model and flags), the load average
and the date, which ``python scripts/write_speed_section.py bench.json`` puts into the README (the
first preset's; the others are under ``other_presets``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tagseg import TAG
from tagseg.database import InMemoryTextDatabase
from tagseg.testing import save_random_clip, save_random_dinov2, save_random_talk2dino

WORDS = (
    "cat dog car person horse sheep cow bird boat train bus bottle chair table sofa plant tree sky road "
    "grass water building wall floor window door street field mountain beach snow bicycle kite umbrella"
).split()


ARCHITECTURES = {
    "paper": ("base", "large-14", 768),
    "proxyclip": ("base", "large-14", 768),
    "fast": ("small", "base-16", 512),
    "talk2dino": ("base", "base", 768),
}
"""Random-weight stand-ins of each preset's models: DINOv2 size, CLIP size (talk2dino: its own size), joint-space dimension."""


def random_models(preset: str, folder: Path) -> tuple[Path, str]:
    """The preset's random-weight stand-ins saved in ``folder``: the feature model and the clip_model spec."""
    dinov2_size, clip_size, _ = ARCHITECTURES[preset]
    if preset == "talk2dino":
        dinov2 = save_random_dinov2(folder / f"dinov2-{dinov2_size}-registers", dinov2_size, registers=True)
        return dinov2, f"talk2dino:{save_random_talk2dino(folder / 'talk2dino-base', clip_size)}"
    return save_random_dinov2(folder / f"dinov2-{dinov2_size}", dinov2_size), str(save_random_clip(folder / f"clip-{clip_size}", clip_size))


def synthetic_database(entries: int, dim: int, model_id: str, seed: int = 0) -> InMemoryTextDatabase:
    """Random unit vectors labelled with short captions drawn from a word list."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((entries, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(WORDS), size=(entries, 3))
    texts = [f"a {WORDS[a]} and a {WORDS[b]} near the {WORDS[c]} #{i}" for i, (a, b, c) in enumerate(picks)]
    return InMemoryTextDatabase(texts, vectors, model_id)


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB (``VmHWM`` of ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def photos() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee()]


def folder_photos(folder: Path, count: int) -> None:
    """``count`` real photos as PNG files in ``folder``, skimage's cycled."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut, data.chelsea, data.coffee, data.rocket, data.immunohistochemistry]
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(sources[index % len(sources)]()).save(folder / f"photo{index:03d}.png")


def folder_throughput(tag: TAG, count: int, batch_sizes: list[int], modes: list[int]) -> dict[str, float]:
    """Images/s of the folder runner on ``count`` photos for each batch size and each ``ahead`` of
    ``modes`` (1: forwards ahead, 0: in turn)."""
    from tagseg.batch import segment_files

    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder_photos(Path(tmp) / "photos", count)
        for batch_size in batch_sizes:
            for ahead in modes:
                start = time.perf_counter()
                out = Path(tmp) / f"out-batch{batch_size}-ahead{ahead}"
                report = segment_files([Path(tmp) / "photos"], out, tag=tag, batch_size=batch_size, ahead=ahead)
                rates[f"batch {batch_size} ahead={ahead}"] = len(report.done) / (time.perf_counter() - start)
    return rates


def measure(args: argparse.Namespace) -> dict:
    """One dtype in this process: stage timings, plain forwards, peak memory, folder throughput."""
    if args.preset == "toy":
        tag = TAG.from_pretrained("toy")
        start = time.perf_counter()
        for image in photos():
            tag(image)
        single = (time.perf_counter() - start) / 3
        folder = folder_throughput(tag, args.folder, args.batch_size, args.ahead)
        return {"single": single, "folder": folder, "folder_peak_rss_gib": peak_rss_gib()}
    dim = ARCHITECTURES[args.preset][2]
    database = synthetic_database(args.entries, dim, args.clip)
    tag = TAG.from_pretrained(
        args.preset, feature_model=args.dinov2, clip_model=args.clip, crf=args.crf, database=database, dtype=args.dtype
    )
    images = photos()
    start = time.perf_counter()
    cold = tag(images[0])
    first = {"seconds": time.perf_counter() - start, "naming": cold.timings["naming"]}
    runs = [tag(image).timings for _ in range(args.runs) for image in images]
    stages = list(runs[0])
    median = {stage: statistics.median(run.get(stage, 0.0) for run in runs) for stage in stages}
    pixels = torch.rand(1, 3, tag.config.image_size, tag.config.image_size, generator=torch.Generator().manual_seed(0))

    def plain_clip() -> None:
        with torch.inference_mode():
            tag.embedder.model(pixel_values=tag.embedder.model_input(pixels), interpolate_pos_encoding=True)

    forwards = {}
    backbones = [("dinov2", lambda: tag.features(pixels))]
    if hasattr(tag.embedder, "model"):  # talk2dino has no CLIP image tower: Stage 1's features are its embeddings
        backbones.append(("clip", plain_clip))
    for name, work in backbones:
        times = []
        for _ in range(args.runs + 1):
            begin = time.perf_counter()
            work()
            times.append(time.perf_counter() - begin)
        forwards[name] = min(times[1:])
    result = {"dtype": tag.models.get("dtype"), "stages": median, "forwards": forwards, "first": first, "peak_rss_gib": peak_rss_gib()}
    if args.folder and args.dtype == args.folder_dtype:
        result["folder"] = folder_throughput(tag, args.folder, args.batch_size, args.ahead)
        result["folder_peak_rss_gib"] = peak_rss_gib()
    return result


def report(result: dict, configured: str, preset: str) -> float:
    """Print one preset's run in one dtype; returns its seconds per image."""
    stages, forwards = result["stages"], result["forwards"]
    per_image = sum(stages.values())
    print(f"\n== preset {preset}, dtype {configured} (runs in {result['dtype']}) ==")
    print(f"{'stage':<12}{'ms':>10}{'share':>9}")
    for stage, seconds in stages.items():
        print(f"{stage:<12}{1000 * seconds:>10.1f}{seconds / per_image:>9.1%}")
    plain = forwards["dinov2"] + forwards.get("clip", 0.0)
    stage1 = sum(stages.get(stage, 0.0) for stage in ("kmeans", "crf", "regions"))
    clip_text = f" + CLIP {forwards['clip']:.2f} s = {plain:.2f} s" if "clip" in forwards else " (no CLIP image forward)"
    print(f"s/image {per_image:.2f}; plain forwards DINOv2 {forwards['dinov2']:.2f} s{clip_text}")
    print(f"end-to-end / plain forwards {per_image / plain:.2f} (target <= 1.15)", end="")
    print(f"; GEM / plain CLIP {stages['embedder'] / forwards['clip']:.2f} (target <= 1.25)" if "clip" in forwards else "")
    print(f"stage 1 outside DINOv2 (kmeans + crf + regions) {stage1:.2f} s (target <= 0.2)")
    print(f"peak RSS {result['peak_rss_gib']:.2f} GiB (target <= 1.6); first image {result['first']['seconds']:.2f} s, its naming {1000 * result['first']['naming']:.0f} ms")
    if "folder" in result:
        report_folder(result["folder"], 1 / per_image, result["folder_peak_rss_gib"], 1 / (1.1 * plain))
    return per_image


def report_folder(rates: dict[str, float], single: float, peak_rss: float, target: float | None = None) -> None:
    rates_text = ", ".join(f"{mode} {rate:.3f}" for mode, rate in rates.items())
    aim = f" (target >= {target:.3f})" if target else ""
    print(f"folder throughput images/s: {rates_text}{aim}; one image at a time {single:.3f}")
    print(f"peak RSS after the folder runs {peak_rss:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--preset", choices=[*sorted(ARCHITECTURES), "toy"], nargs="+", default=["paper"])
    parser.add_argument("--folder", type=int, default=20, help="photos in the folder throughput run (0: none)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 8], help="folder runs: images per forward and per finished batch")
    parser.add_argument("--ahead", type=int, nargs="+", default=[1, 0], help="folder runs: 1 forwards ahead, 0 in turn")
    parser.add_argument("--float32", action=argparse.BooleanOptionalAction, default=True, help="also measure float32")
    parser.add_argument("--json", type=Path, help="also write the results, the command and the machine to this file")
    parser.add_argument("--folder-dtype", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--dinov2", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dtype:  # a child process: one preset
        print(json.dumps(measure(argparse.Namespace(**{**vars(args), "preset": args.preset[0]}))))
        return

    from tagseg.config import TAGConfig

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; presets {' '.join(args.preset)}, photos at 448x448")
    default = TAGConfig().dtype
    machine = machine_description()
    print(f"CPU: {machine['cpu']}; load average {machine['load_before']}")
    results: dict[str, dict[str, dict]] = {}
    for preset in args.preset:
        if preset == "toy":
            result = measure(argparse.Namespace(**{**vars(args), "preset": "toy"}))
            print(f"toy world, {args.folder} photos")
            report_folder(result["folder"], 1 / result["single"], result["folder_peak_rss_gib"])
            continue
        results[preset] = {}
        with tempfile.TemporaryDirectory() as tmp:
            dinov2, clip = random_models(preset, Path(tmp))
            print(f"\nmodels: {dinov2.name}, {Path(clip.removeprefix('talk2dino:')).name} (random weights); database {args.entries} entries")
            for dtype in dict.fromkeys(["float32"] * args.float32 + [default, "auto"]):
                command = [sys.executable, __file__, "--dtype", dtype, "--dinov2", str(dinov2), "--clip", clip,
                           "--runs", str(args.runs), "--entries", str(args.entries), "--preset", preset,
                           "--folder", str(args.folder), "--batch-size", *map(str, args.batch_size), "--ahead", *map(str, args.ahead), "--folder-dtype", default,
                           "--crf" if args.crf else "--no-crf"]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results[preset][dtype] = json.loads(output.strip().splitlines()[-1])
                report(results[preset][dtype], dtype, preset)
    seconds = {(preset, dtype): sum(result["stages"].values()) for preset in results for dtype, result in results[preset].items()}
    first = next(iter(results), None)
    for (preset, dtype), value in seconds.items():
        if (first, dtype) in seconds:
            print(f"{preset} {dtype}: {value:.2f} s/image, {value / seconds[first, dtype]:.2f}x {first}")
    if args.json and first is not None:
        command = "python benchmarks/bench_pipeline.py " + shlex.join(arg for arg in sys.argv[1:] if arg != str(args.json))
        command = command.replace(" --json", "").rstrip()
        record = {**machine, "load_after": os.getloadavg()[0], "command": command, "preset": first,
                  "entries": args.entries, "folder": args.folder, "default_dtype": default, "results": results[first],
                  "other_presets": {preset: by_dtype for preset, by_dtype in results.items() if preset != first}}
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")


def machine_description() -> dict:
    """The CPU (model name and the flags that decide the speed), the date and the load average now."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        info = ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if flag in flags]
    return {"cpu": f"{model or 'unknown CPU'}, {os.cpu_count()} cores, {' '.join(wanted) or 'no AVX2'}",
            "torch": torch.__version__, "date": datetime.date.today().isoformat(), "load_before": os.getloadavg()[0]}


if __name__ == "__main__":
    main()
