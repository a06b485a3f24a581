"""``tagseg models``: fetch models ahead of time and check what the local cache holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tagseg.builder import ModelStatus, config_models, download_models, model_status
from tagseg.cli import options as opt
from tagseg.config import PRESETS

app = typer.Typer(
    no_args_is_help=True,
    help="Check what the local cache holds for a run (offline), download models into it (online), pack and unpack them for machines without internet.",
)
console = Console(highlight=False)

Models = Annotated[
    Optional[list[str]],
    typer.Argument(help="Hugging Face ids or model folders [default: the models of the chosen settings].", show_default=False),
]

CacheDir = Annotated[
    Optional[Path],
    typer.Option(help="Hugging Face cache to check (default: $HF_HUB_CACHE or ~/.cache/huggingface/hub).", show_default=False),
]


def _chosen(
    models: Optional[list[str]],
    preset: Optional[str],
    config: Optional[Path],
    **flags: Optional[str],
) -> list[str]:
    """The models named on the command line, else those of the effective settings (``sam_model`` with ``--segmenter sam``)."""
    if models:
        return list(dict.fromkeys(models))
    return config_models(opt.build_config(preset, config, **flags))


def _size(status: ModelStatus) -> str:
    return f"{status.size_bytes / 1e6:,.1f} MB" if status.size_bytes else "-"


def _table(statuses: list[ModelStatus], used_by: dict[str, list[str]] | None = None) -> Table:
    table = Table(show_lines=False)
    table.add_column("model", no_wrap=True)  # ids are what users copy: never cut
    if used_by is not None:
        table.add_column("presets")
    table.add_column("status")
    table.add_column("size", justify="right")
    table.add_column("where")
    for status in statuses:
        state = "[green]ready[/green]" if status.ready else "[red]missing[/red]"
        row = [escape(status.model)]
        if used_by is not None:
            row.append(", ".join(used_by.get(status.model, [])) or "-")
        row += [state, _size(status), escape(status.location or "-")]
        table.add_row(*row)
    return table


def _report_problems(statuses: list[ModelStatus]) -> None:
    for status in statuses:
        if status.problem:
            opt.errors.print(f"[red]{escape(status.model)}:[/red] {escape(status.problem)}")


@app.command("list")
def list_models(
    preset: opt.Preset = None,
    config: opt.ConfigFile = None,
    segmenter: opt.Segmenter = None,
    sam_model: opt.SamModel = None,
    cache_dir: CacheDir = None,
) -> None:
    """Show each preset's models and whether the local cache holds them (no network access).

    With --segmenter sam (or a configuration that chooses it) the Segment Anything model is listed too.
    """
    with opt.reported_errors():
        if preset or config or segmenter or sam_model:
            chosen = opt.build_config(preset, config, segmenter=segmenter, sam_model=sam_model)
            used_by = {model: ["chosen"] for model in config_models(chosen)}
        else:
            used_by = {}
            for name, settings in PRESETS.items():
                for model in config_models(settings):
                    used_by.setdefault(model, []).append(name)
        console.print(_table(model_status(used_by, cache_dir=cache_dir), used_by))


@app.command()
def verify(
    models: Models = None,
    preset: opt.Preset = None,
    config: opt.ConfigFile = None,
    feature_model: opt.FeatureModel = None,
    clip_model: opt.ClipModel = None,
    segmenter: opt.Segmenter = None,
    sam_model: opt.SamModel = None,
    cache_dir: CacheDir = None,
) -> None:
    """Check that models are complete in the cache and that every cached file matches its checksum.

    Exit status 1 when one is missing or damaged; the message says how to fix it.
    """
    with opt.reported_errors():
        chosen = _chosen(
            models, preset, config, feature_model=feature_model, clip_model=clip_model, segmenter=segmenter, sam_model=sam_model
        )
        with opt.errors.status("hashing cached files"):
            statuses = model_status(chosen, verify=True, cache_dir=cache_dir)
        console.print(_table(statuses))
        _report_problems(statuses)
        if not all(status.ready for status in statuses):
            raise typer.Exit(1)


@app.command()
def download(
    models: Models = None,
    preset: opt.Preset = None,
    config: opt.ConfigFile = None,
    feature_model: opt.FeatureModel = None,
    clip_model: opt.ClipModel = None,
    segmenter: opt.Segmenter = None,
    sam_model: opt.SamModel = None,
) -> None:
    """Download models into the Hugging Face cache, for machines that will run offline.

    Copy the cache (~/.cache/huggingface, or $HF_HOME) to the offline machine afterwards.
    """
    with opt.reported_errors():
        chosen = _chosen(
            models, preset, config, feature_model=feature_model, clip_model=clip_model, segmenter=segmenter, sam_model=sam_model
        )
        with opt.errors.status(f"downloading {', '.join(chosen)}"):
            folders = download_models(chosen)
        for folder in folders:
            console.print(f"[green]ready:[/green] {escape(str(folder))}")
        console.print(_table(model_status(chosen)))


Archive = Annotated[Path, typer.Argument(metavar="ARCHIVE", help="The archive file (tar).", show_default=False)]
DatabaseOption = opt._FLAGS["database"]


@app.command()
def pack(
    archive: Archive,
    preset: opt.Preset = None,
    config: opt.ConfigFile = None,
    feature_model: opt.FeatureModel = None,
    clip_model: opt.ClipModel = None,
    segmenter: opt.Segmenter = None,
    sam_model: opt.SamModel = None,
    database: DatabaseOption = None,
) -> None:
    """On a machine with internet: write every model a run needs, and the shipped vocabulary embedded by its
    text tower, into one archive.

    Models missing from the cache are downloaded first; the vocabulary is embedded if it is not cached yet
    (minutes on a CPU). Copy the archive to the machine without internet and run `tagseg models unpack ARCHIVE`
    there: the same settings then run with no download and no network access.
    """
    from tagseg.offline import pack as pack_archive

    with opt.reported_errors():
        settings = opt.build_config(
            preset, config, feature_model=feature_model, clip_model=clip_model, segmenter=segmenter,
            sam_model=sam_model, database=database,
        )
        contents = pack_archive(settings, archive)
    size = archive.stat().st_size / 1e6
    console.print(f"[green]wrote[/green] {escape(str(archive))} ({size:,.1f} MB): models {', '.join(contents['models']) or '-'}; "
                  f"databases {', '.join(contents['databases']) or '-'}")
    if contents["not_packed"]:
        console.print(f"not packed (local folders or built in): {escape(', '.join(contents['not_packed']))}")


@app.command()
def unpack(
    archive: Archive,
    cache_dir: CacheDir = None,
) -> None:
    """On the machine without internet: put the models and vocabulary of a `tagseg models pack` archive into the
    Hugging Face cache ($HF_HOME) and tagseg's cache ($TAGSEG_CACHE), where runs find them."""
    from tagseg.offline import unpack as unpack_archive

    with opt.reported_errors():
        contents = unpack_archive(archive, hub_cache=cache_dir)
    console.print(f"[green]installed[/green] models {', '.join(contents['models']) or '-'}; "
                  f"databases {', '.join(contents['databases']) or '-'}")


@app.command()
def check(
    preset: opt.Preset = None,
    config: opt.ConfigFile = None,
    feature_model: opt.FeatureModel = None,
    clip_model: opt.ClipModel = None,
    segmenter: opt.Segmenter = None,
    sam_model: opt.SamModel = None,
    database: DatabaseOption = None,
) -> None:
    """Say, without network access, what a run of the chosen settings needs and what this machine lacks:
    models, the embedded vocabulary, the optional extras; with the fix for each.

    Exit status 1 when a model is missing (the run would fail); a vocabulary not yet embedded or an extra not
    installed is reported but does not fail the check.
    """
    from tagseg.offline import check as check_run

    with opt.reported_errors():
        settings = opt.build_config(
            preset, config, feature_model=feature_model, clip_model=clip_model, segmenter=segmenter,
            sam_model=sam_model, database=database,
        )
        found = check_run(settings)
    for item in found:
        state = "[green]ready  [/green]" if item.ready else "[red]missing[/red]"
        console.print(f"{state} {escape(item.name)}: {escape(item.detail)}")
        if item.fix:
            console.print(f"        fix: {escape(item.fix)}")
    if any(not item.ready and item.name.startswith("model ") for item in found):
        raise typer.Exit(1)
