"""Run a segmenter over a dataset (through the prediction cache) and score it under several protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from tagseg.builder import build_text_encoder
from tagseg.config import TAGConfig, preset
from tagseg.errors import ConfigError
from tagseg.eval.cache import Prediction, PredictionCache
from tagseg.eval.datasets import IGNORE_INDEX, SegmentationDataset
from tagseg.eval.metrics import scores
from tagseg.eval.protocols import ImageOverlap, MappingProtocol, name_totals
from tagseg.eval.report import EvaluationReport, ProtocolResult
from tagseg.interfaces import TextEncoder
from tagseg.result import Segmentation

Segmenter = Callable[[np.ndarray], Segmentation]


class LazyTAG:
    """A :class:`~tagseg.TAG` built from ``config`` on its first call, so cached runs load no model."""

    def __init__(self, config: TAGConfig) -> None:
        self.config = config
        self._tag: Any = None

    def __call__(self, image: np.ndarray) -> Segmentation:
        if self._tag is None:
            from tagseg.pipeline import TAG

            self._tag = TAG.from_pretrained(self.config)
        return self._tag(image)

    def text_encoder(self) -> TextEncoder:
        """The pipeline's text tower: the built pipeline's, or loaded alone (no image model)."""
        if self._tag is not None:
            return self._tag.text_encoder
        return build_text_encoder(self.config)


def evaluation_classes(dataset: SegmentationDataset, count_background: bool) -> tuple[tuple[str, ...], np.ndarray]:
    """Scored class names and the table taking the dataset's label values to their indices.

    With a background class that is not counted (VOC-20), background pixels become ignored.
    """
    table = np.arange(256, dtype=np.int64)
    table[len(dataset.class_names) :] = IGNORE_INDEX
    background = dataset.background
    if background is None or count_background:
        return dataset.class_names, table
    table[background] = IGNORE_INDEX
    table[background + 1 : len(dataset.class_names)] -= 1
    names = dataset.class_names[:background] + dataset.class_names[background + 1 :]
    return names, table


def _resize_nearest(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape == (size, size):
        return array
    return np.asarray(Image.fromarray(array.astype(np.int32)).resize((size, size), Image.Resampling.NEAREST))


def image_overlap(
    image_id: str, prediction: Prediction, truth: np.ndarray, num_classes: int, resolution: int | None
) -> ImageOverlap:
    """Pixels of every predicted segment on every class, both maps resized (nearest) to ``resolution``² if set."""
    segments = prediction.label_map
    if segments.shape != truth.shape:
        raise ValueError(f"{image_id}: prediction {segments.shape} and ground truth {truth.shape} differ in size")
    if resolution is not None:
        segments, truth = _resize_nearest(segments, resolution), _resize_nearest(truth, resolution)
    segments = segments.ravel().astype(np.int64)
    truth = truth.ravel().astype(np.int64)
    valid = truth < num_classes
    count = len(prediction.names)
    flat = np.bincount(segments[valid] * num_classes + truth[valid], minlength=count * num_classes)
    return ImageOverlap(image_id, list(prediction.names), flat[: count * num_classes].reshape(count, num_classes))


def collect_overlaps(
    dataset: SegmentationDataset,
    segmenter: Segmenter,
    *,
    class_table: np.ndarray,
    num_classes: int,
    cache: PredictionCache | None = None,
    limit: int | None = None,
    resolution: int | None = 448,
    progress: bool = False,
) -> list[ImageOverlap]:
    """Predict (or read from ``cache``) every image and tabulate its overlaps with the ground truth."""
    ids = dataset.ids()[:limit] if limit is not None else dataset.ids()
    overlaps = []
    for index in _progress(range(len(ids)), len(ids), f"{dataset.name}", progress):
        image_id = ids[index]
        prediction = cache.get(dataset.name, image_id) if cache is not None else None
        if prediction is None:
            prediction = Prediction.from_segmentation(segmenter(dataset.image(index)))
            if cache is not None:
                cache.put(dataset.name, image_id, prediction)
        truth = class_table[dataset.label(index)]
        overlaps.append(image_overlap(image_id, prediction, truth, num_classes, resolution))
    return overlaps


def score(
    overlaps: Sequence[ImageOverlap], class_names: Sequence[str], protocols: Iterable[MappingProtocol]
) -> tuple[list[ProtocolResult], dict[str, list[tuple[str, float]]]]:
    """Scores of every protocol, and per class the names given to its pixels (largest share first)."""
    results = []
    for protocol in protocols:
        confusion = protocol.confusion(overlaps, class_names)
        mapping = dict(getattr(protocol, "mapping", {}))
        results.append(ProtocolResult(protocol.name, protocol.settings(), confusion, scores(confusion), mapping))
    names, totals = name_totals(overlaps, len(class_names))
    naming = {}
    for column, class_name in enumerate(class_names):
        pixels = totals[:, column] if len(names) else np.zeros(0)
        order = np.argsort(-pixels, kind="stable")
        total = pixels.sum()
        naming[class_name] = [(names[i], float(pixels[i] / total)) for i in order if pixels[i] > 0]
    return results, naming


def evaluate(
    dataset: SegmentationDataset,
    protocols: Sequence[MappingProtocol],
    *,
    segmenter: Segmenter | None = None,
    config: TAGConfig | str = "paper",
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    resolution: int | None = 448,
    count_background: bool = False,
    progress: bool = False,
) -> EvaluationReport:
    """Segment ``dataset`` (at most ``limit`` images) and score it under every protocol.

    ``segmenter`` (e.g. a :class:`~tagseg.TAG`) defaults to a TAG built from ``config`` on the first
    image not found in ``cache_dir``. Predictions are cached under the segmenter's ``config``.
    ``resolution=448`` resizes ground truth and prediction to 448x448 (nearest), the reference;
    ``None`` scores at the native resolution. ``count_background`` scores VOC's background (VOC-21).
    """
    if segmenter is None:
        segmenter = LazyTAG(config if isinstance(config, TAGConfig) else preset(config))
    pipeline_config = getattr(segmenter, "config", None)
    if cache_dir is not None and not isinstance(pipeline_config, TAGConfig):
        raise ConfigError("Caching predictions needs a segmenter with a TAGConfig `config` (its settings key the cache).")
    pipeline_settings = pipeline_config.to_dict() if isinstance(pipeline_config, TAGConfig) else {}
    cache = PredictionCache(cache_dir, pipeline_settings) if cache_dir is not None else None
    class_names, table = evaluation_classes(dataset, count_background)
    for protocol in protocols:
        if hasattr(protocol, "prepare"):
            protocol.prepare(class_names)
    overlaps = collect_overlaps(
        dataset,
        segmenter,
        class_table=table,
        num_classes=len(class_names),
        cache=cache,
        limit=limit,
        resolution=resolution,
        progress=progress,
    )
    results, naming = score(overlaps, class_names, protocols)
    settings = {
        "dataset": dataset.name,
        "images": len(overlaps),
        "classes": len(class_names),
        "background": None if dataset.background is None else ("counted" if count_background else "ignored"),
        "ignore_index": IGNORE_INDEX,
        "resolution": "native" if resolution is None else f"{resolution}x{resolution} nearest",
        "limit": limit,
        "pipeline": pipeline_settings,
        "cache": None if cache is None else str(cache.directory),
    }
    return EvaluationReport(settings, list(class_names), results, naming)


def _progress(items: range, total: int, description: str, enabled: bool) -> Iterable[int]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, total=total, description=description, transient=True)
