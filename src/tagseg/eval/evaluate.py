"""Run a segmenter over a dataset (through the prediction cache) and score it under several protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from tagseg.config import ModelSettings, TAGConfig, preset
from tagseg.errors import ConfigError, EvaluationError
from tagseg.eval.cache import Prediction, PredictionCache
from tagseg.eval.datasets import IGNORE_INDEX, SegmentationDataset
from tagseg.eval.metrics import scores
from tagseg.eval.protocols import ImageOverlap, MappingProtocol, name_totals
from tagseg.eval.report import EvaluationReport, ProtocolResult
from tagseg.lazy_tag import LazyTAG
from tagseg.preprocess import working_image, working_size
from tagseg.progress import ProgressListener, listener_for
from tagseg.result import Segmentation

Segmenter = Callable[[np.ndarray], Segmentation]

SCORINGS = ("tagseg", "reference")
"""``tagseg``: score the prediction at the image's size, after ``resolution``; unassigned pixels are misses.
``reference``: as the authors' code, score the working-size prediction directly and drop pixels of
names a thresholded protocol left unassigned (docs/evaluation.md)."""


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


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` at ``size`` (height, width), nearest neighbour."""
    if array.shape == size:
        return array
    return np.asarray(Image.fromarray(array.astype(np.int32)).resize(size[::-1], Image.Resampling.NEAREST))


def image_overlap(
    image_id: str, prediction: Prediction, truth: np.ndarray, num_classes: int, resolution: int | None
) -> ImageOverlap:
    """Pixels of every predicted segment on every class, both maps resized (nearest) to ``resolution``² if set."""
    segments = prediction.label_map
    if segments.shape != truth.shape:
        raise EvaluationError(
            f"{image_id}: the prediction is {_size(segments.shape)} but the ground truth is {_size(truth.shape)}; "
            "a segmenter must return a map of the image's size (is the label file of another image?)."
        )
    count = len(prediction.names)
    if segments.size and (int(segments.min()) < 0 or int(segments.max()) >= count):
        raise EvaluationError(
            f"{image_id}: the prediction holds segment ids {int(segments.min())}..{int(segments.max())} "
            f"but names only {count} segment(s) (ids 0..{count - 1}); every segment id needs a name."
        )
    if resolution is not None:
        square = (resolution, resolution)
        segments, truth = _resize_nearest(segments, square), _resize_nearest(truth, square)
    segments = segments.ravel().astype(np.int64)
    truth = truth.ravel().astype(np.int64)
    valid = truth < num_classes
    flat = np.bincount(segments[valid] * num_classes + truth[valid], minlength=count * num_classes)
    return ImageOverlap(image_id, list(prediction.names), flat.reshape(count, num_classes))


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(side) for side in shape[:2])


def collect_overlaps(
    dataset: SegmentationDataset,
    segmenter: Segmenter,
    *,
    class_table: np.ndarray,
    num_classes: int,
    cache: PredictionCache | None = None,
    limit: int | None = None,
    resolution: int | None = 448,
    working: ModelSettings | None = None,
    progress: bool | ProgressListener = False,
) -> list[ImageOverlap]:
    """Predict (or read from ``cache``) every image and tabulate its overlaps with the ground truth.

    With ``working`` (the pipeline's model settings: the reference scoring) every image is first
    resized to the working size, so the prediction is the working-size map, and the ground truth is
    resized to it (nearest); ``resolution`` is then not used.
    """
    ids = dataset.ids()[:limit] if limit is not None else dataset.ids()
    overlaps = []
    listener = listener_for(progress)
    listener.begin(dataset.name, len(ids))
    for index in range(len(ids)):
        image_id = ids[index]
        truth = class_table[dataset.label(index)]
        if working is not None:
            truth = _resize_nearest(truth, working_size(*truth.shape[:2], working.image_size, working.keep_aspect_ratio))
        prediction = cache.get(dataset.name, image_id) if cache is not None else None
        if cache is not None and prediction is not None and prediction.label_map.shape != truth.shape:
            raise EvaluationError(
                f"{image_id}: the cached prediction in {cache.directory / dataset.name} is "
                f"{_size(prediction.label_map.shape)} but this image is scored at {_size(truth.shape)}: the cache "
                f"holds predictions of other images under the dataset name {dataset.name!r}. Delete that folder, "
                "or run with --no-cache or another --cache-dir."
            )
        if prediction is None:
            image = dataset.image(index)
            prediction = Prediction.from_segmentation(segmenter(image if working is None else working_image(image, working)))
            if cache is not None:
                cache.put(dataset.name, image_id, prediction)
        overlaps.append(image_overlap(image_id, prediction, truth, num_classes, None if working is not None else resolution))
        listener.update(index + 1, len(ids))
    return overlaps


def score(
    overlaps: Sequence[ImageOverlap],
    class_names: Sequence[str],
    protocols: Iterable[MappingProtocol],
    *,
    scoring: str = "tagseg",
) -> tuple[list[ProtocolResult], dict[str, list[tuple[str, float]]]]:
    """Scores of every protocol, and per class the names given to its pixels (largest share first).

    ``scoring="reference"`` drops the unassigned pixels of protocols that abstain (a threshold)
    from their confusion matrix instead of counting them as misses.
    """
    _check_scoring(scoring)
    results = []
    for protocol in protocols:
        confusion = protocol.confusion(overlaps, class_names)
        drops = scoring == "reference" and getattr(protocol, "abstains", False)
        if drops:
            confusion[:, len(class_names)] = 0
        settings = {**protocol.settings(), "unassigned_pixels": "dropped" if drops else "misses"}
        mapping = dict(getattr(protocol, "mapping", {}))
        results.append(ProtocolResult(
            protocol.name, settings, confusion, scores(confusion), mapping, getattr(protocol, "mapping_score", "score")
        ))
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
    scoring: str = "tagseg",
    progress: bool | ProgressListener = False,
) -> EvaluationReport:
    """Segment ``dataset`` (at most ``limit`` images) and score it under every protocol.

    ``segmenter`` (e.g. a :class:`~tagseg.TAG`) defaults to a TAG built from ``config`` on the first
    image not found in ``cache_dir``. Predictions are cached under the segmenter's ``config``.
    ``resolution=448`` resizes ground truth and prediction to 448x448 (nearest);
    ``None`` scores at the native resolution. ``count_background`` scores VOC's background (VOC-21).
    ``scoring="reference"`` scores as the authors' code (see :data:`SCORINGS`): the segmenter gets
    the image at its working size and that map is scored; ``resolution`` must then be None or that size.
    """
    _check_scoring(scoring)
    if segmenter is None:
        segmenter = LazyTAG(config if isinstance(config, TAGConfig) else preset(config))
    pipeline_config = getattr(segmenter, "config", None)
    if not isinstance(pipeline_config, TAGConfig) and (cache_dir is not None or scoring == "reference"):
        need = "Caching predictions" if cache_dir is not None else "The reference scoring"
        raise ConfigError(f"{need} needs a segmenter with a TAGConfig `config` (its settings key the cache and give the working size).")
    working = pipeline_config.models if scoring == "reference" else None  # type: ignore[union-attr]
    if working is not None and resolution is not None and (working.keep_aspect_ratio or resolution != working.image_size):
        raise ConfigError(
            f"The reference scoring scores at the pipeline's working size ({_working_text(working)}), "
            f"not at resolution {resolution}: leave the resolution out (None)."
        )
    pipeline_settings = pipeline_config.to_dict() if isinstance(pipeline_config, TAGConfig) else {}
    cache = PredictionCache(cache_dir, cache_settings(pipeline_config, scoring)) if cache_dir is not None else None  # type: ignore[arg-type]
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
        working=working,
        progress=progress,
    )
    results, naming = score(overlaps, class_names, protocols, scoring=scoring)
    settings = {
        "dataset": dataset.name,
        "images": len(overlaps),
        "classes": len(class_names),
        "background": None if dataset.background is None else ("counted" if count_background else "ignored"),
        "ignore_index": IGNORE_INDEX,
        "scoring": scoring,
        "resolution": _resolution_text(resolution, working),
        "limit": limit,
        "pipeline": pipeline_settings,
        "cache": None if cache is None else {
            "directory": str(cache.directory), "read": cache.hits, "predicted": len(overlaps) - cache.hits
        },
    }
    if dataset.note:
        settings["note"] = dataset.note
    return EvaluationReport(settings, list(class_names), results, naming)


def cache_settings(config: TAGConfig, scoring: str = "tagseg") -> dict[str, Any]:
    """What keys the prediction cache: every pipeline setting, the resolved dtype and the scoring's input size.

    The device is left out: the same settings and dtype give the same predictions on any device up
    to floating-point rounding. ``dtype="auto"`` is resolved, since it means bfloat16 on one machine
    and float32 on another.
    """
    from tagseg.backbones.base import resolve_dtype
    from tagseg.backbones.hub import resolve_device

    settings = config.to_dict()
    del settings["device"]
    settings["dtype"] = str(resolve_dtype(config.models.dtype, resolve_device(config.models.device))).removeprefix("torch.")
    settings["prediction_size"] = "working" if scoring == "reference" else "image"
    return settings


def _check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ConfigError(f"Unknown scoring {scoring!r}; choose one of: {', '.join(SCORINGS)}.")


def _working_text(models: ModelSettings) -> str:
    return f"longer side {models.image_size}" if models.keep_aspect_ratio else f"{models.image_size}x{models.image_size}"


def _resolution_text(resolution: int | None, working: ModelSettings | None) -> str:
    if working is not None:
        return f"working size ({_working_text(working)}), prediction unresized, ground truth nearest"
    return "native" if resolution is None else f"{resolution}x{resolution} nearest"
