"""Segments, run-length encoding and JSON output."""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as coco_mask

from tagseg.masks import mask_to_rle, rle_to_mask
from tagseg.result import Segment, Segmentation


def test_rle_round_trips_and_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for shape, first in [((17, 23), False), ((5, 4), True), ((9, 1), True)]:
        mask = rng.random(shape) > 0.6
        mask.flat[0] = first
        rle = mask_to_rle(mask)
        assert np.array_equal(rle_to_mask(rle), mask)
        coco = coco_mask.frPyObjects(rle, *shape)
        assert np.array_equal(coco_mask.decode(coco).astype(bool), mask)
        assert coco_mask.area(coco) == mask.sum()


def test_segment_area_bbox_and_json() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    segment = Segment(id=0, label="cat", score=0.31, mask=mask, cluster_ids=[4, 7])
    assert segment.area == 18
    assert segment.bbox == (3, 2, 6, 3)
    result = Segmentation(label_map=mask.astype(np.int32), segments=[segment], cluster_map=np.zeros((10, 12), np.int32))
    data = json.loads(result.to_json())
    assert data["image"] == {"height": 10, "width": 12}
    assert data["segments"][0]["bbox"] == [3, 2, 6, 3]
    assert np.array_equal(rle_to_mask(data["segments"][0]["rle"]), mask)
