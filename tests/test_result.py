"""Segments, run-length encoding, JSON output and the per-image record."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from tagseg import TAG
from tagseg.masks import mask_to_rle, rle_to_mask
from tagseg.result import Segment, Segmentation, segmentation_schema
from tagseg.toy import toy_scene


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


@pytest.fixture(scope="module")
def toy_result() -> Segmentation:
    return TAG.from_pretrained("toy", image_size=96, crf=False)(toy_scene(3, size=(90, 120))[0])


def test_the_record_follows_the_schema_and_reads_back_to_the_same_result(toy_result: Segmentation) -> None:
    record = toy_result.to_record("photos/scene.png")
    jsonschema.validate(record, segmentation_schema(), cls=jsonschema.Draft202012Validator)
    assert record["image"] == {"path": "photos/scene.png", "height": 90, "width": 120}
    assert set(record["timings"]) == set(toy_result.timings) and record["tagseg_version"]
    back = Segmentation.from_record(json.loads(json.dumps(record)))
    assert back.to_record("photos/scene.png") == record
    assert np.array_equal(back.label_map, toy_result.label_map) and len(back.segments) == len(toy_result.segments) > 1
    for read, segment in zip(back.segments, toy_result.segments):
        assert np.array_equal(read.mask, segment.mask) and read.label == segment.label
        assert [c.name for c in read.candidates] == [c.name for c in segment.candidates] and read.candidates
        assert [r.text for r in read.retrieved] == [r.text for r in segment.retrieved]
        assert read.embedding is None and read.score == round(segment.score, 6)
    assert "path" not in toy_result.to_record()["image"]
