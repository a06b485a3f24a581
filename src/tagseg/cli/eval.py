"""``tagseg eval``: segment a benchmark, map the names to its classes under several protocols, score."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console

from tagseg.cli import options as opt
from tagseg.cli.options import reported_errors
from tagseg.config import TAGConfig

console = Console(highlight=False)

PROTOCOLS = ("tag", "clip", "oracle-image", "oracle-dataset")


class DatasetKind(str, Enum):
    voc = "voc"
    context59 = "context59"
    ade20k = "ade20k"
    cocostuff = "cocostuff"
    cityscapes = "cityscapes"
    toy = "toy"


class Background(str, Enum):
    ignore = "ignore"
    count = "count"


class Scoring(str, Enum):
    tagseg = "tagseg"
    reference = "reference"


def _resolution(value: str | None, scoring: Scoring) -> int | None:
    if value is None:
        return None if scoring is Scoring.reference else 448
    if value == "native":
        return None
    if not value.isdigit() or int(value) < 1:
        raise typer.BadParameter(f"--resolution takes a size in pixels or 'native', not {value!r}")
    return int(value)


@opt.with_settings
def eval_command(
    dataset: DatasetKind = typer.Option(..., "--dataset", "-d", help="Benchmark to evaluate on."),
    root: Optional[Path] = typer.Option(None, help="Folder holding the dataset (not needed for toy)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the dataset's validation split)."),
    protocol: List[str] = typer.Option(
        list(PROTOCOLS), "--protocol", help=f"Label-mapping protocols to report (repeat): {', '.join(PROTOCOLS)}."
    ),
    text_model: str = typer.Option(
        "sentence-transformers/all-mpnet-base-v2", help="Sentence-transformers id or directory of the tag protocol."
    ),
    threshold: Optional[float] = typer.Option(
        None, help="Names whose best cosine is below this stay unassigned (tag and clip protocols)."
    ),
    template: str = typer.Option("{}", help="Prompt template of the clip protocol, e.g. 'a photo of a {}'."),
    resolution: Optional[str] = typer.Option(
        None, help="Score at SIZE x SIZE (nearest; default 448) or 'native'. Not with --scoring reference."
    ),
    scoring: Scoring = typer.Option(
        Scoring.tagseg,
        help="tagseg: score the prediction at the image's size (then --resolution), unassigned pixels are misses. "
        "reference: as the authors' code, score the working-size map itself and drop unassigned pixels (--threshold).",
    ),
    background: Background = typer.Option(
        Background.ignore, help="VOC background: ignore it (VOC-20, reference) or count it as a class (VOC-21)."
    ),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N images."),
    toy_images: int = typer.Option(20, min=1, help="Scenes generated for --dataset toy."),
    cache_dir: Optional[Path] = typer.Option(None, help="Prediction cache (default: $TAGSEG_CACHE/eval)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse and store predictions per image."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: tagseg-eval/DATASET)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    *,
    settings: Callable[[str], TAGConfig],
) -> None:
    """Evaluate on a benchmark: mIoU and pixel accuracy under each label-mapping protocol, plus a naming report.

    The pipeline's settings are chosen as for `tagseg segment` (--preset, then --config, then the settings
    flags); the default preset is toy for --dataset toy, else paper. One run per dense method
    (--dense-method) gives comparable reports.
    """
    unknown = sorted(set(protocol) - set(PROTOCOLS))
    if unknown:
        raise typer.BadParameter(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}")
    with reported_errors():
        _run(
            dataset.value, root, split, protocol, text_model, threshold, template, _resolution(resolution, scoring),
            background is Background.count, scoring.value, limit, toy_images,
            settings("toy" if dataset.value == "toy" else "paper"),
            (cache_dir or _default_cache()) if cache else None, out or Path("tagseg-eval") / dataset.value, progress,
        )


def _default_cache() -> Path:
    from tagseg.database.default import cache_root

    return cache_root() / "eval"


def _run(
    kind: str,
    root: Path | None,
    split: str | None,
    protocol_names: list[str],
    text_model: str,
    threshold: float | None,
    template: str,
    resolution: int | None,
    count_background: bool,
    scoring: str,
    limit: int | None,
    toy_images: int,
    pipeline_config: TAGConfig,
    cache_dir: Path | None,
    out: Path,
    progress: bool,
) -> None:
    from tagseg.eval import (
        LazyTAG,
        OracleProtocol,
        ToyDataset,
        evaluate,
        open_dataset,
        sentence_transformer_protocol,
        text_encoder_protocol,
    )

    data = ToyDataset(toy_images) if kind == "toy" else open_dataset(kind, root, split)
    segmenter = LazyTAG(pipeline_config)
    factories = {
        "tag": lambda: sentence_transformer_protocol(text_model, threshold=threshold),
        "clip": lambda: text_encoder_protocol(segmenter.text_encoder, threshold=threshold, template=template),
        "oracle-image": lambda: OracleProtocol("image"),
        "oracle-dataset": lambda: OracleProtocol("dataset"),
    }
    protocols = [factories[name]() for name in dict.fromkeys(protocol_names)]
    report = evaluate(
        data,
        protocols,
        segmenter=segmenter,
        cache_dir=cache_dir,
        limit=limit,
        resolution=resolution,
        count_background=count_background,
        scoring=scoring,
        progress=progress,
    )
    markdown, json_path = report.write(out)
    console.print(report.to_markdown().split("\n## ")[0].rstrip(), soft_wrap=True, markup=False)
    cached = report.settings["cache"]
    if cached is not None:
        console.print(
            f"\n{cached['read']} of {report.settings['images']} predictions read from the cache "
            f"{cached['directory']}, {cached['predicted']} predicted.", soft_wrap=True, markup=False,
        )
    console.print(f"\nReport: {markdown} and {json_path}")
