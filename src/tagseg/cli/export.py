"""``tagseg export``: turn a finished ``tagseg segment`` folder into dataset formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from tagseg.cli import options as opt
from tagseg.exports import DEFAULT_MIN_INSTANCE_AREA, EXPORT_FORMATS, CategoryTable, ExportOptions, export_folder

console = Console(highlight=False)

DATASET_FORMATS = [f for f in EXPORT_FORMATS if f != "embeddings"]


def export(
    folder: Annotated[Path, typer.Argument(help="Output folder of `tagseg segment` (its per-image JSON files).", show_default=False)],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Export folder (default: FOLDER/export).", show_default=False)
    ] = None,
    formats: Annotated[
        str, typer.Option(help=f"Formats, comma-separated from: {', '.join(DATASET_FORMATS)}.")
    ] = ",".join(DATASET_FORMATS),
    categories: Annotated[
        Optional[Path],
        typer.Option(help="Category ids to keep: categories.json of an earlier export, a COCO file, or names one a line.", show_default=False),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict-categories", help="Leave out names that --categories lacks instead of adding them.")
    ] = False,
    min_area: Annotated[
        int,
        typer.Option(
            "--min-area", min=0,
            help="Leave instances with fewer pixels out of COCO, panoptic and YOLO (speckles); 0 keeps all.",
        ),
    ] = DEFAULT_MIN_INSTANCE_AREA,
    image_root: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder COCO file_name is relative to (default: the deepest folder holding every image).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write COCO instances, COCO panoptic, Pascal-VOC SegmentationClass and YOLO segmentation files.

    One category table serves the whole run (same name, same id in every format); it is saved as
    categories.json, which --categories reads back to keep ids stable across runs. A FOLDER with
    no results is an error (exit status 1) and writes nothing.
    """
    with opt.reported_errors():
        if not folder.is_dir():
            raise typer.BadParameter(f"{folder} is not a folder", param_hint="FOLDER")
        table = CategoryTable.load(categories, frozen=strict) if categories else CategoryTable()
        target = out or folder / "export"
        options = ExportOptions(min_instance_area=min_area, image_root=image_root)
        chosen = [f.strip() for f in formats.split(",") if f.strip()]
        count, files = export_folder(folder, target, chosen, table, options)
    console.print(f"Exported {count} image(s), {table.max_id} categories, to {escape(str(target))}")
    for path in files:
        console.print(f"  {escape(str(path))}")
    if table.unmatched:
        opt.errors.print(f"[yellow]Left out (not in --categories):[/yellow] {escape(', '.join(sorted(table.unmatched)))}")
