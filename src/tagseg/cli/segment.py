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
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from tagseg.batch import BatchListener
from tagseg.cli import engine as eng
from tagseg.cli import options as opt
from tagseg.cli.progress import ProgressBars, progress_bars
from tagseg.config import TAGConfig
from tagseg.errors import ConfigError
from tagseg.exports import CategoryTable, ExportOptions
from tagseg.image import check_inputs
from tagseg.output_layout import FORMATS, BatchReport

console = Console(highlight=False)


def _images_per_second(task: Task) -> float | None:
    """Images finished per second since the first image started: known from the first finished image on
    (rich's own estimate waits for a second one and forgets the start)."""
    if not task.completed or not task.elapsed:
        return None
    return task.completed / task.elapsed


class _RateColumn(ProgressColumn):
    """Images per second, or seconds per image when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = _images_per_second(task)
        if not speed:
            return Text("-- img/s", style="progress.data.speed")
        text = f"{speed:.1f} img/s" if speed >= 1 else f"{1 / speed:.1f} s/img"
        return Text(text, style="progress.data.speed")


class _TimeLeftColumn(ProgressColumn):
    """Time left at the rate so far, from the first finished image on."""

    def render(self, task: Task) -> Text:
        speed = _images_per_second(task)
        if not speed or task.total is None:
            return Text("ETA -:--:--", style="progress.remaining")
        seconds = int(max(task.total - task.completed, 0) / speed)
        return Text(f"ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}", style="progress.remaining")


class _BatchBars(BatchListener, ProgressBars):
    """The batch on stderr: the bar counts images to segment; skipped ones leave the total."""

    def image_started(self, path: Path) -> None:
        super().image_started(path)
        if self.task is not None and not self.bars.tasks[self.task].started:  # the rate counts from the first image
            self.bars.start_task(self.task)


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
    if report.failed and (report.done or report.skipped):
        opt.errors.print("Fix or remove the failed files and run the same command again: finished images are skipped.")
    elif report.failed:
        opt.errors.print("Nothing was segmented: fix the inputs listed above and run the command again.")


def _check_inputs(paths: list[str], settings: TAGConfig) -> None:
    """Refuse, before any model loads and with nothing written, a run none of whose inputs can be segmented;
    when only some cannot, the batch reports them with the rest."""
    problems = check_inputs(paths, max_pixels=settings.models.max_pixels)
    if len(problems) < len(paths):
        return
    for problem in problems:
        opt.errors.print(f"[red]failed:[/red] {escape(problem.reason)}: {escape(problem.fix)}")
    opt.errors.print("Nothing to segment: no model was loaded and nothing was written.")
    raise typer.Exit(1)


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
        int, typer.Option(min=1, help="Images per backbone forward and per Stage 1 batch (with kmeans_backend and crf.backend torch), on every engine; more than 1 pays on a GPU.")
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

    \b
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
        _check_inputs(paths, settings)
        columns = (
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            _RateColumn(), TimeElapsedColumn(), _TimeLeftColumn(),
        )
        try:
            runner = eng.open_engine(engine, address, workers, cpus_per_worker, gpus_per_worker)
            with progress_bars(columns, transient=True) as bars:
                listener = _BatchBars(bars)
                listener.begin("finding images", None)
                report = runner.segment(
                    paths, out, config=settings, formats=_formats(formats), overwrite=overwrite, alpha=alpha,
                    listener=listener, exports=_formats(export), categories=table,
                    export_options=ExportOptions(image_root=image_root), batch_size=batch_size,
                )
        except KeyboardInterrupt:
            opt.errors.print("[yellow]Interrupted.[/yellow] Run the same command again to resume; finished images are skipped.")
            raise typer.Exit(130) from None
    _summary(report)
    if not report.ok:
        raise typer.Exit(1)
