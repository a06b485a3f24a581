"""Evaluation reports: a Markdown table for people and a JSON file with every number and setting.

Units: the JSON gives every score, accuracy, share and cosine as a fraction (0 to 1) and counts
in pixels, and says so in its ``units`` entry; the Markdown shows scores as percent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagseg.builder import TALK2DINO_PREFIX
from tagseg.eval.metrics import Scores


@dataclass
class ProtocolResult:
    """Scores of one mapping protocol, its confusion matrix and the name -> class mapping it used.

    ``mapping_score`` names the number beside each mapped class: ``cosine`` (text protocols) or
    ``pixel_share`` (oracle-dataset: the share of the name's pixels on that class).
    """

    name: str
    settings: dict[str, Any]
    confusion: np.ndarray
    scores: Scores
    mapping: dict[str, tuple[str | None, float]]
    mapping_score: str = "score"


UNITS = {
    "scores": "fractions from 0 to 1 (miou, accuracies, per-class IoU; the Markdown report shows percent)",
    "confusion": "pixels",
    "mapping": "cosine of the text embeddings (tag, clip) or pixel_share: fraction of the name's pixels (oracle-dataset)",
    "naming": "share: fraction of the class's pixels",
}


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _share(value: float) -> str:
    return "<1%" if value < 0.005 else f"{100 * value:.0f}%"


def _segmenter(pipeline: dict[str, Any]) -> str:
    """Stage 1 as the report names it: k-means, or SAM with its model and what fills uncovered pixels."""
    if pipeline.get("segmenter") != "sam":
        return "DINOv2 k-means"
    return f"Segment Anything ({pipeline.get('sam_model')}, uncovered pixels: {pipeline.get('uncovered')})"


def embedding_label(pipeline: dict[str, Any]) -> str:
    """How the patch embeddings of a run were made, from its pipeline settings: ``gem (depth 6)``,
    ``naclip, gaussian_std=3.0``, ``proxyclip, windows 336/112``, ``talk2dino (DINOv2 patches)`` (no dense
    CLIP method); ``-`` when not recorded."""
    method = pipeline.get("dense_method")
    if method is None:
        return "-"
    if str(pipeline.get("clip_model", "")).startswith(TALK2DINO_PREFIX):
        return "talk2dino (DINOv2 patches)"
    parts = [f"{method} (depth {pipeline.get('gem_depth')})" if method == "gem" else str(method)]
    parts += [f"{name}={value}" for name, value in sorted((pipeline.get("method_settings") or {}).items())]
    if pipeline.get("window_size"):
        parts.append(f"windows {pipeline['window_size']}/{pipeline['window_stride']}")
    return ", ".join(parts)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


@dataclass
class EvaluationReport:
    """Everything an evaluation run found. ``naming`` lists per class the names given, by pixel share."""

    settings: dict[str, Any]
    class_names: list[str]
    protocols: list[ProtocolResult]
    naming: dict[str, list[tuple[str, float]]]

    def __getitem__(self, protocol: str) -> Scores:
        """Scores of the protocol called ``protocol``."""
        for result in self.protocols:
            if result.name == protocol:
                return result.scores
        raise KeyError(f"no protocol {protocol!r}; have {[r.name for r in self.protocols]}")

    @property
    def dense_method(self) -> str:
        """The run's dense CLIP method with its settings (:func:`embedding_label`)."""
        return embedding_label(self.settings.get("pipeline") or {})

    def to_dict(self, top_names: int = 10) -> dict[str, Any]:
        """JSON-ready: settings, the dense method, then per protocol its summary, per-class IoU/accuracy,
        confusion and mapping."""
        return {
            "units": UNITS,
            "settings": self.settings,
            "dense_method": self.dense_method,
            "class_names": self.class_names,
            "protocols": {
                r.name: {
                    "settings": r.settings,
                    "miou": _number(r.scores.miou),
                    "pixel_accuracy": _number(r.scores.pixel_accuracy),
                    "mean_accuracy": _number(r.scores.mean_accuracy),
                    "scored_classes": r.scores.num_scored_classes,
                    "per_class_iou": {c: _number(v) for c, v in zip(self.class_names, r.scores.iou)},
                    "per_class_accuracy": {c: _number(v) for c, v in zip(self.class_names, r.scores.accuracy)},
                    "confusion": {"rows": "ground truth", "columns": [*self.class_names, "(unassigned)"],
                                  "counts": r.confusion.tolist()},
                    "mapping": {
                        name: {"class": c, r.mapping_score: round(s, 6)} for name, (c, s) in sorted(r.mapping.items())
                    },
                }
                for r in self.protocols
            },
            "naming": {
                c: [{"name": n, "share": round(s, 6)} for n, s in names[:top_names]] for c, names in self.naming.items()
            },
        }

    def to_markdown(self, top_names: int = 5) -> str:
        """Summary table, per-class IoU table (one column per protocol) and the naming report.

        The summary table has a column for the dense method, so the rows of runs with different
        methods paste into one comparison table.
        """
        s = self.settings
        lines = [
            f"# Evaluation on {s['dataset']}",
            "",
            f"{s['images']} images, {s['classes']} classes, background {s['background'] or 'n/a'}, "
            f"ignore label {s['ignore_index']}, evaluated at {s['resolution']}, {s.get('scoring', 'tagseg')} scoring, "
            f"dense CLIP {self.dense_method}; "
            f"segments from {_segmenter(s.get('pipeline', {}))}.",
            *([f"Note: {s['note']}"] if s.get("note") else []),
            "",
            "| dense method | protocol | mIoU | pixel acc. | mean acc. | classes scored |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in self.protocols:
            sc = r.scores
            lines.append(
                f"| {self.dense_method} | {r.name} | {_percent(sc.miou)} | {_percent(sc.pixel_accuracy)} | "
                f"{_percent(sc.mean_accuracy)} | {sc.num_scored_classes} |"
            )
        lines += ["", "## IoU per class (%)", "", "| class | " + " | ".join(r.name for r in self.protocols) + " |"]
        lines.append("|---|" + "---:|" * len(self.protocols))
        for index, name in enumerate(self.class_names):
            lines.append(f"| {name} | " + " | ".join(_percent(r.scores.iou[index]) for r in self.protocols) + " |")
        lines += ["", "## Names given per class (share of the class's pixels)", "", "| class | names |", "|---|---|"]
        for name, given in self.naming.items():
            listed = ", ".join(f"{n} ({_share(share)})" for n, share in given[:top_names]) or "-"
            lines.append(f"| {name} | {listed} |")
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.json`` into ``directory``; return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        markdown, data = directory / "report.md", directory / "report.json"
        markdown.write_text(self.to_markdown(), encoding="utf-8")
        data.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return markdown, data
