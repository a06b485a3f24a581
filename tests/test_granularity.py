"""Granularity (segmenters/kmeans.py): automatic k, minimum region area (merged, not dropped), connected components and instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import label

from tagseg import TAG
from tagseg.segmenters.kmeans import choose_num_clusters, merge_small_regions, silhouette
from tagseg.masks import connected_components
from tagseg.toy import PALETTE, ToyPatchFeatures, toy_scene


def _named_iou(result, regions: np.ndarray, names: list[str]) -> float:
    ious = []
    for region, name in enumerate(names):
        truth = regions == region
        predicted = np.isin(result.label_map, [s.id for s in result.segments if s.label == name])
        ious.append((truth & predicted).sum() / (truth | predicted).sum())
    return float(np.mean(ious))


def test_connected_components_match_scikit_image() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = rng.random(tuple(rng.integers(1, 50, size=2))) < rng.random()
        labels, count = connected_components(mask)
        expected = label(mask, connectivity=2)
        assert count == expected.max() and np.array_equal(labels, expected)


def test_silhouette_prefers_the_true_grouping() -> None:
    points = torch.cat([torch.randn(50, 2) * 0.1, torch.randn(50, 2) * 0.1 + 5])
    truth = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    assert silhouette(points, truth) > 0.9 > silhouette(points, torch.randint(0, 2, (100,)))


@pytest.mark.parametrize("criterion", ["silhouette", "elbow"])
def test_auto_k_finds_the_scene_colours(criterion: str) -> None:
    image, _, names = toy_scene(0, size=(256, 256))
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    features = ToyPatchFeatures()(pixels)[0]
    k, centres, values = choose_num_clusters(features.reshape(-1, features.shape[-1]), 2, 8, criterion, restarts=2, seed=0)
    assert k == len(names) and centres.shape[0] == k and sorted(values) == list(range(2, 9))


def test_auto_k_pipeline_recovers_the_shapes() -> None:
    image, regions, names = toy_scene(0, size=(128, 160))
    result = TAG.from_pretrained("toy", image_size=128, num_clusters="auto", max_clusters=8, kmeans_restarts=2)(image)
    assert _named_iou(result, regions, names) > 0.9


def test_small_regions_join_their_most_similar_neighbour() -> None:
    labels = np.zeros((60, 80), dtype=np.int32)
    labels[:, 40:] = 1
    labels[10:13, 10:13] = 2  # a speck inside label 0
    labels[30:32, 40:42] = 2  # a speck touching 0 and 1: its affinity favours 1
    affinity = np.stack([(labels == 0) * 1.0, (labels == 1) * 1.0, np.zeros(labels.shape)])
    affinity[1, 30:32, 40:42] = 0.9
    merged = merge_small_regions(labels, affinity, min_area=20)
    assert (merged[10:13, 10:13] == 0).all() and (merged[30:32, 40:42] == 1).all()
    assert np.array_equal(merged[labels != 2], labels[labels != 2])
    assert np.array_equal(merge_small_regions(labels, affinity, min_area=0), labels)


def test_minimum_region_area_in_the_pipeline() -> None:
    image, regions, names = toy_scene(3, size=(128, 128))
    spare = next(colour for colour in PALETTE if colour not in names)
    image[96:112, 2:18] = PALETTE[spare]  # a 256-pixel speck of another colour
    plain = TAG.from_pretrained("toy", image_size=128)(image)
    result = TAG.from_pretrained("toy", image_size=128, min_region_area=0.02)(image)  # 328 pixels
    smallest = lambda r: min(int(m.sum()) for s in r.segments for m in (i.mask for i in s.instances()))  # noqa: E731
    assert spare in plain.labels and smallest(plain) == 256
    assert spare not in result.labels and smallest(result) >= 328
    assert sum(s.area for s in result.segments) == regions.size, "no pixel is dropped"
