"""The evaluation against the reference's own scoring, the prediction cache's key and counts, and its errors.

Expected numbers are computed in each test from hand-made maps, with plain numpy counting.
"""

from __future__ import annotations

import numpy as np
import pytest

from tagseg.config import TAGConfig, preset
from tagseg.errors import ConfigError, EvaluationError
from tagseg.eval import ImageOverlap, NearestClassProtocol, OracleProtocol, ToyDataset, evaluate, score
from tagseg.eval.datasets import SegmentationDataset
from tagseg.result import Segment, Segmentation

CLASSES = ("red", "blue", "green")
TRUTH_SIZE = (20, 30)


def halves(shape: tuple[int, int], split: float = 0.45) -> np.ndarray:
    """Segment 0 left of column round(width * split), segment 1 right of it."""
    height, width = shape
    return np.broadcast_to(np.arange(width) >= round(width * split), (height, width)).astype(np.int32)


class HalvesSegmenter:
    """Splits any image it gets into a left "red" and a right "blue" segment (the map depends on the input size)."""

    def __init__(self, config: TAGConfig, names: tuple[str, ...] = ("red", "blue")) -> None:
        self.config = config
        self.names = names
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Segmentation:
        self.calls += 1
        label_map = halves(image.shape[:2])
        segments = [Segment(i, name, 1.0, label_map == i, [i]) for i, name in enumerate(self.names)]
        return Segmentation(label_map, segments, label_map)


class HandMade(SegmentationDataset):
    """One 20x30 image: "red" left of column 12, "blue" right of it, the top row not scored."""

    name = "handmade"
    class_names = CLASSES

    def ids(self) -> list[str]:
        return ["only"]

    def image(self, index: int) -> np.ndarray:
        return np.zeros((*TRUTH_SIZE, 3), dtype=np.uint8)

    def label(self, index: int) -> np.ndarray:
        truth = np.where(np.arange(TRUTH_SIZE[1]) >= 12, 1, 0).astype(np.uint8)[None].repeat(TRUTH_SIZE[0], axis=0)
        truth[0] = 255
        return truth


def nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by pixel centres (PIL's convention), written out."""
    rows = ((np.arange(size[0]) + 0.5) * array.shape[0] / size[0]).astype(int)
    columns = ((np.arange(size[1]) + 0.5) * array.shape[1] / size[1]).astype(int)
    return array[rows][:, columns]


def miou(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in either map, pixel by pixel (255 in ``truth``: not scored)."""
    valid = truth != 255
    ious = []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (truth == c) & valid)
        fp = np.sum((predicted == c) & (truth != c) & valid)
        fn = np.sum((predicted != c) & (truth == c) & valid)
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious))


def names_by_text() -> NearestClassProtocol:
    """A text protocol over hand-made embeddings: class axes; names at chosen cosines to them."""
    vectors = {
        "red": [1, 0, 0, 0], "blue": [0, 1, 0, 0], "green": [0, 0, 1, 0],
        "crimson": [0.9, np.sqrt(1 - 0.81), 0, 0], "vague": [0.3, 0.4, 0, np.sqrt(1 - 0.25)],
    }
    return NearestClassProtocol("text", lambda texts: np.array([vectors[t] for t in texts], dtype=float), threshold=0.5)


def test_reference_scoring_scores_the_working_size_map_itself() -> None:
    config = preset("toy", image_size=32)
    dataset = HandMade()
    truth = dataset.label(0)

    ours = evaluate(dataset, [names_by_text()], segmenter=HalvesSegmenter(config), resolution=32)
    reference = evaluate(dataset, [names_by_text()], segmenter=HalvesSegmenter(config), resolution=None, scoring="reference")

    # tagseg: the map at the image's size (split at column 14 of 30), then both resized to 32x32 (15 of 32).
    round_trip = nearest(halves(TRUTH_SIZE), (32, 32))
    # reference: the map made at the working size (split at column 14 of 32), scored as it is.
    working = halves((32, 32))
    expected_ours = miou(nearest(truth, (32, 32)), round_trip, 3)
    expected_reference = miou(nearest(truth, (32, 32)), working, 3)
    assert expected_ours != pytest.approx(expected_reference), "the hand-made maps tell the two scorings apart"
    assert ours["text"].miou == pytest.approx(expected_ours, abs=1e-12)
    assert reference["text"].miou == pytest.approx(expected_reference, abs=1e-12)
    assert reference.settings["scoring"] == "reference" and "working size (32x32)" in reference.settings["resolution"]

    with pytest.raises(ConfigError, match="working size"):
        evaluate(dataset, [names_by_text()], segmenter=HalvesSegmenter(config), resolution=448, scoring="reference")


def test_reference_scoring_drops_abstained_pixels_instead_of_counting_misses() -> None:
    # One image, two segments: "crimson" (cosine 0.9 to red) and "vague" (best cosine 0.4, to blue).
    overlap = np.array([[50, 10, 0], [5, 30, 0]])  # rows: segments; columns: pixels on red, blue, green
    images = [ImageOverlap("one", ["crimson", "vague"], overlap)]

    (ours,), _ = score(images, CLASSES, [names_by_text()])
    (reference,), _ = score(images, CLASSES, [names_by_text()], scoring="reference")

    # Threshold 0.5: crimson -> red, vague unassigned. Counted as misses, vague's 5 red and 30 blue
    # pixels are false negatives; dropped, they are not in the matrix at all. Blue is never predicted.
    red_ours = 50 / (50 + 10 + 5)  # TP, FP (crimson on blue), FN (vague on red)
    red_reference = 50 / (50 + 10)
    assert ours.scores.iou.tolist() == pytest.approx([red_ours, 0.0, np.nan], nan_ok=True)
    assert reference.scores.iou.tolist() == pytest.approx([red_reference, 0.0, np.nan], nan_ok=True)
    assert reference.scores.pixel_accuracy == pytest.approx(50 / 60) and ours.scores.pixel_accuracy == pytest.approx(50 / 95)
    assert ours.settings["unassigned_pixels"] == "misses" and reference.settings["unassigned_pixels"] == "dropped"

    # The oracles do not abstain: an unmatched segment stays a miss under either scoring.
    three = [ImageOverlap("one", ["a", "b", "c"], np.array([[50, 10], [5, 30], [7, 0]]))]
    (oracle_ours,), _ = score(three, CLASSES[:2], [OracleProtocol("image")])
    (oracle_reference,), _ = score(three, CLASSES[:2], [OracleProtocol("image")], scoring="reference")
    assert oracle_ours.scores.miou == oracle_reference.scores.miou == pytest.approx((50 / (50 + 10 + 12) + 30 / (30 + 5 + 10)) / 2)


def test_cache_ignores_the_device_keys_the_dtype_and_counts_what_it_read(tmp_path) -> None:
    dataset = ToyDataset(3, size=(48, 64))
    first = HalvesSegmenter(preset("toy", device="cpu", dtype="float32"))
    report = evaluate(dataset, [OracleProtocol("image")], segmenter=first, cache_dir=tmp_path)
    assert first.calls == 3 and report.settings["cache"]["read"] == 0 and report.settings["cache"]["predicted"] == 3

    other_device = HalvesSegmenter(preset("toy", device="cuda:1", dtype="float32"))
    again = evaluate(dataset, [OracleProtocol("image")], segmenter=other_device, cache_dir=tmp_path)
    assert other_device.calls == 0, "the same settings on another device give the same predictions"
    assert again.settings["cache"] == {**report.settings["cache"], "read": 3, "predicted": 0}

    other_dtype = HalvesSegmenter(preset("toy", device="cpu", dtype="bfloat16"))
    evaluate(dataset, [OracleProtocol("image")], segmenter=other_dtype, cache_dir=tmp_path, limit=2)
    assert other_dtype.calls == 2, "another dtype is another cache entry"

    working = HalvesSegmenter(preset("toy", device="cpu", dtype="float32"))
    evaluate(dataset, [OracleProtocol("image")], segmenter=working, cache_dir=tmp_path, resolution=None, scoring="reference")
    assert working.calls == 3, "working-size predictions are cached apart from image-size ones"


def test_cached_prediction_of_another_size_is_a_clear_error(tmp_path) -> None:
    config = preset("toy")
    evaluate(HandMade(), [OracleProtocol("image")], segmenter=HalvesSegmenter(config), cache_dir=tmp_path)

    class Resized(HandMade):
        def label(self, index: int) -> np.ndarray:
            return super().label(index)[:, :24]

    with pytest.raises(EvaluationError, match=r"cached prediction .* is 20x30 but this image is scored at 20x24.*--no-cache"):
        evaluate(Resized(), [OracleProtocol("image")], segmenter=HalvesSegmenter(config), cache_dir=tmp_path)


def test_segment_ids_without_a_name_are_an_error() -> None:
    one_name = HalvesSegmenter(preset("toy"), names=("red",))  # the map has segments 0 and 1
    with pytest.raises(EvaluationError, match=r"segment ids 0\.\.1 but names only 1 segment"):
        evaluate(HandMade(), [OracleProtocol("image")], segmenter=one_name)


def test_json_report_labels_its_units_and_what_each_mapping_score_is() -> None:
    report = evaluate(
        HandMade(), [names_by_text(), OracleProtocol("dataset")], segmenter=HalvesSegmenter(preset("toy")), resolution=None
    )
    data = report.to_dict()
    assert "fraction" in data["units"]["scores"] and data["units"]["confusion"] == "pixels"
    assert data["protocols"]["text"]["mapping"]["red"] == {"class": "red", "cosine": 1.0}
    # The "red" segment (columns 0-13) lies on 12 red columns and 2 blue ones: 12 / 14 of its scored pixels.
    assert data["protocols"]["oracle-dataset"]["mapping"]["red"] == {"class": "red", "pixel_share": pytest.approx(12 / 14)}
    assert data["protocols"]["text"]["miou"] == pytest.approx(miou(HandMade().label(0), halves(TRUTH_SIZE), 3), abs=1e-6)
