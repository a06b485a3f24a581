"""``tagseg segment``: segment images and write overlays, label PNGs and JSON."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from tagseg.batch import BatchListener
from tagseg.cli import engine as eng
from tagseg.cli import options as opt
from tagseg.config import TAGConfig
from tagseg.errors import ConfigError
from tagseg.exports import CategoryTable, ExportOptions
from tagseg.output_layout import FORMATS, BatchReport, ImageOutcome

console = Console(highlight=False)


class _RateColumn(ProgressColumn):
    """Images per second, or seconds per image when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("-- img/s", style="progress.data.speed")
        text = f"{speed:.1f} img/s" if speed >= 1 else f"{1 / speed:.1f} s/img"
        return Text(text, style="progress.data.speed")


class _ProgressBar(BatchListener):
    """Shows the batch on stderr: the bar counts images to segment; skipped ones leave the total."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("finding images", total=None, start=False)

    def started(self, total: int) -> None:
        self.progress.update(self.task, total=total, description="starting")

    def loading_models(self) -> None:
        self.progress.update(self.task, description="loading models")

    def image_started(self, path: Path) -> None:
        if not self.progress.tasks[self.task].started:
            self.progress.start_task(self.task)
        self.progress.update(self.task, description=escape(path.name[-40:]))

    def image_finished(self, outcome: ImageOutcome) -> None:
        if outcome.status == "skipped":
            total = self.progress.tasks[self.task].total or 1
            self.progress.update(self.task, total=total - 1)
        else:
            self.progress.advance(self.task)


def _read_inputs(inputs: list[str]) -> list[str]:
    """Replace ``-`` by the paths listed on standard input, one per line."""
    expanded: list[str] = []
    for item in inputs:
        if item == "-":
            expanded += paths_from_stdin(sys.stdin.buffer.read())
        else:
            expanded.append(item)
    return expanded


def paths_from_stdin(data: bytes) -> list[str]:
    """The paths listed in ``data`` (standard input), one a line; image bytes or other binary data are refused."""
    if b"\0" in data[:65536] or _is_image(data):
        raise ConfigError(
            "Standard input holds binary data (an image?), not paths: `tagseg segment -` reads image paths, one a "
            "line (e.g. `ls photos/*.jpg | tagseg segment -`). Save the image to a file and pass its path instead."
        )
    return [line.strip() for line in os.fsdecode(data).splitlines() if line.strip()]


def _is_image(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _formats(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _summary(report: BatchReport) -> None:
    table = Table(title="tagseg segment", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("segmented", str(len(report.done)))
    table.add_row("skipped (outputs exist)", str(len(report.skipped)))
    table.add_row("failed", f"[red]{len(report.failed)}[/red]" if report.failed else "0")
    per_image = report.seconds_per_image
    table.add_row("time per image", f"{per_image:.2f} s" if per_image is not None else "-")
    table.add_row("model loading", f"{report.model_seconds:.1f} s")
    table.add_row("total time", f"{report.total_seconds:.1f} s")
    table.add_row("output folder", escape(str(report.out_dir)))
    console.print(table)
    for outcome in report.failed:
        opt.errors.print(f"[red]failed:[/red] {escape(outcome.reason or str(outcome.path))}")
    if report.failed:
        opt.errors.print("Fix or remove the failed files and run the same command again: finished images are skipped.")


@opt.with_settings
def segment(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (searched recursively), glob patterns (quote them: 'photos/**/*.jpg') "
            "or - to read paths from standard input, one a line (image bytes on standard input are refused).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("tagseg-out"),
    formats: Annotated[
        str, typer.Option(help=f"Outputs to write, comma-separated from: {', '.join(FORMATS)}.")
    ] = ",".join(FORMATS),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Segment again images whose outputs exist.")] = False,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Opacity of segment colours in the overlay.")] = 0.5,
    export: Annotated[
        str, typer.Option("--export", help="Also write dataset formats to OUT/export, comma-separated from: "
                          "coco, panoptic, voc, yolo, embeddings (see `tagseg export`).")
    ] = "",
    categories: Annotated[
        Optional[Path], typer.Option(help="Category ids for --export: categories.json of an earlier run.", show_default=False)
    ] = None,
    image_root: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder the file_name of results.coco.json and --export coco/panoptic is relative to "
            "(default: the deepest folder holding every image).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Images per backbone forward, on every engine; more than 1 pays on a GPU.")
    ] = 1,
    engine: eng.Engine = eng.EngineName.local,
    address: eng.Address = None,
    workers: eng.Workers = 1,
    cpus_per_worker: eng.CpusPerWorker = 1.0,
    gpus_per_worker: eng.GpusPerWorker = 0.0,
    *,
    settings: TAGConfig,
) -> None:
    """Segment images and name their segments; write pictures and JSON to the output folder.

    For each image NAME the output folder gets:
    NAME.overlay.png: the photo with segment colours, names and a legend sorted by area;
    NAME.labels.png: pixel value = segment id, with a colour palette;
    NAME.json: segments, scores, RLE masks, retrieved texts (schema: tagseg/data/segmentation.schema.json);
    and for the run, results.coco.json: every segment in COCO format, with scores.

    Re-running skips finished images, so an interrupted run resumes (--overwrite redoes them).
    The next image is decoded and goes through the backbones while the current one is finished.
    With --engine ray the images are segmented by Ray workers (docs/ray.md) and OUT also gets
    manifest.parquet, one row per image.
    Exit status: 0 when every image was segmented or skipped, 1 when anything failed.
    """
    with opt.reported_errors():
        table = CategoryTable.load(categories) if categories else None
        paths = _read_inputs(inputs)
        if not paths:
            raise typer.BadParameter("no image paths were given on standard input", param_hint="INPUTS")
        columns = (
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        try:
            runner = eng.open_engine(engine, address, workers, cpus_per_worker, gpus_per_worker)
            with Progress(*columns, console=opt.errors, transient=True) as progress:
                report = runner.segment(
                    paths, out, config=settings, formats=_formats(formats), overwrite=overwrite, alpha=alpha,
                    listener=_ProgressBar(progress), exports=_formats(export), categories=table,
                    export_options=ExportOptions(image_root=image_root), batch_size=batch_size,
                )
        except KeyboardInterrupt:
            opt.errors.print("[yellow]Interrupted.[/yellow] Run the same command again to resume; finished images are skipped.")
            raise typer.Exit(130) from None
    _summary(report)
    if not report.ok:
        raise typer.Exit(1)
