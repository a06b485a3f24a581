"""Benchmark evaluation: dataset readers, label-mapping protocols, metrics, reports, prediction cache."""

from tagseg.eval.cache import Prediction, PredictionCache
from tagseg.eval.datasets import (
    IGNORE_INDEX,
    DatasetLayoutError,
    SegmentationDataset,
    ToyDataset,
    ade20k,
    cityscapes,
    coco_stuff,
    context59,
    open_dataset,
    voc,
)
from tagseg.eval.evaluate import LazyTAG, collect_overlaps, evaluate, evaluation_classes, image_overlap, score
from tagseg.eval.metrics import Scores, confusion_matrix, scores
from tagseg.eval.protocols import (
    DEFAULT_SENTENCE_MODEL,
    ImageOverlap,
    MappingProtocol,
    NearestClassProtocol,
    OracleProtocol,
    sentence_transformer_protocol,
    text_encoder_protocol,
)
from tagseg.eval.report import EvaluationReport, ProtocolResult

__all__ = [
    "DEFAULT_SENTENCE_MODEL",
    "IGNORE_INDEX",
    "DatasetLayoutError",
    "EvaluationReport",
    "ImageOverlap",
    "LazyTAG",
    "MappingProtocol",
    "NearestClassProtocol",
    "OracleProtocol",
    "Prediction",
    "PredictionCache",
    "ProtocolResult",
    "Scores",
    "SegmentationDataset",
    "ToyDataset",
    "ade20k",
    "cityscapes",
    "coco_stuff",
    "collect_overlaps",
    "confusion_matrix",
    "context59",
    "evaluate",
    "evaluation_classes",
    "image_overlap",
    "open_dataset",
    "score",
    "scores",
    "sentence_transformer_protocol",
    "text_encoder_protocol",
    "voc",
]
