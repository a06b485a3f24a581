"""``tagseg db``: build, update, inspect and search text databases."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tagseg.cli import engine as eng
from tagseg.cli.options import reported_errors

if TYPE_CHECKING:
    from tagseg.interfaces import TextEncoder

app = typer.Typer(no_args_is_help=True, help="Build, update, inspect and search text databases.")
console = Console()

DEFAULT_TEXT_MODEL = "openai/clip-vit-large-patch14"
TEXT_MODEL_HELP = "Text tower: a Hugging Face CLIP id, a local directory, or 'toy' (the toy preset's)."


def _load_encoder(source: str) -> TextEncoder:
    """The text tower named by ``--text-model`` or a database: a CLIP id or directory, or the toy one (offline)."""
    from tagseg.builder import text_encoder_for

    return text_encoder_for(source)


def _refuse_read_only(path: Path, action: str) -> None:
    """Refuse to change a clip-retrieval folder (TAG/CaSED releases), saying how to get a writable copy."""
    from tagseg.database.clip_retrieval import is_clip_retrieval_folder
    from tagseg.errors import DatabaseError

    if is_clip_retrieval_folder(path):
        raise DatabaseError(
            f"Cannot {action} {path}: it is a clip-retrieval folder (as TAG and CaSED release them), which tagseg "
            "reads in place but never changes. Make a writable tagseg database from its captions and change that: "
            f"`tagseg db build COPY {path / 'metadata'}/*.parquet --column caption` (this embeds every caption "
            "again with --text-model; convert .arrow metadata files to Parquet first)."
        )


def _stored_model(path: Path) -> str:
    from tagseg.database.store import read_manifest

    return str(read_manifest(path)["model_id"])


@app.command()
def build(
    path: Path = typer.Argument(..., help="Database folder to create."),
    inputs: List[Path] = typer.Argument(..., help="Text files: .txt (one a line), .csv, .tsv, .jsonl, .parquet."),
    text_model: str = typer.Option(DEFAULT_TEXT_MODEL, "--text-model", help=TEXT_MODEL_HELP),
    column: Optional[str] = typer.Option(None, help="Column holding the texts (CSV/TSV/JSONL/Parquet)."),
    template: str = typer.Option("{}", help="Prompt template applied before embedding, e.g. 'a photo of {}'."),
    index: str = typer.Option("auto", help="Index kind: auto, flat (exact), ivf, ivfpq (product-quantised, 14x smaller) or hnsw (approximate)."),
    batch_size: int = typer.Option(256, min=1, help="Texts embedded at once."),
    resume: bool = typer.Option(False, help="Finish an interrupted build of the same inputs."),
    overwrite: bool = typer.Option(False, help="Replace an existing database (once the new one is complete)."),
    engine: eng.Engine = eng.EngineName.local,
    address: eng.Address = None,
    workers: eng.Workers = 1,
    cpus_per_worker: eng.CpusPerWorker = 1.0,
    gpus_per_worker: eng.GpusPerWorker = 0.0,
) -> None:
    """Embed texts from files into a new database (with --engine ray, on the workers of a Ray cluster)."""
    from tagseg.cli.progress import item_columns, progress_bars

    with reported_errors(), progress_bars(item_columns("texts")):
        runner = eng.open_engine(engine, address, workers, cpus_per_worker, gpus_per_worker)
        run = runner.build_database(
            path, inputs, text_model, batch_size=batch_size, column=column, template=template, index=index,
            resume=resume, overwrite=overwrite,
        )
        report = run.build
        console.print(
            f"Embedded {run.embedded} texts in {run.seconds:.1f} s on {run.workers} worker(s) ({engine.value} engine): "
            f"{run.texts_per_second:.0f} texts/s, {run.texts_per_second_per_worker:.0f} per worker."
        )
        console.print(
            f"Stored {report.stored} texts in {report.path} ({report.index} index); skipped "
            f"{report.duplicates} duplicates, {report.blank} blank, {report.unreadable} unreadable."
        )


@app.command()
def add(
    path: Path = typer.Argument(..., help="Database folder."),
    texts: List[str] = typer.Argument(None, help="Texts to add."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A file of texts to add (any build format)."),
    column: Optional[str] = typer.Option(None, help="Column holding the texts in --file."),
    text_model: Optional[str] = typer.Option(None, "--text-model", help=f"{TEXT_MODEL_HELP} Default: the database's."),
) -> None:
    """Add texts without rebuilding; the next search sees them."""
    from tagseg.database import PersistentTextDatabase, open_source

    with reported_errors():
        _refuse_read_only(path, "add texts to")
        encoder = _load_encoder(text_model or _stored_model(path))
        database = PersistentTextDatabase.open(path, encoder=encoder)
        new = list(texts or [])
        unreadable = 0
        source_name = "added"
        if file is not None:
            source = open_source(file, column=column)
            records = [r.text for r in source.records()]
            unreadable = sum(text is None for text in records)
            new += [text for text in records if text is not None]
            source_name = file.name
        report = database.add_texts(new, encoder, source=source_name)
        console.print(
            f"Added {report.added} texts (now {len(database)}); skipped {report.duplicates} already stored, "
            f"{report.blank} blank, {unreadable} unreadable."
        )


@app.command()
def remove(
    path: Path = typer.Argument(..., help="Database folder."),
    texts: List[str] = typer.Argument(None, help="Texts to remove (exact, after stripping)."),
    ids: List[int] = typer.Option([], "--id", help="Ids to remove (as shown by search)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A file of texts to remove."),
    column: Optional[str] = typer.Option(None, help="Column holding the texts in --file."),
) -> None:
    """Remove texts by text or id; the next search no longer returns them."""
    from tagseg.database import PersistentTextDatabase, open_source

    with reported_errors():
        _refuse_read_only(path, "remove texts from")
        database = PersistentTextDatabase.open(path)
        doomed = list(texts or [])
        if file is not None:
            doomed += [r.text for r in open_source(file, column=column).records() if r.text]
        removed = database.remove(texts=doomed, ids=ids)
        console.print(f"Removed {removed} texts (now {len(database)}).")


@app.command()
def info(
    path: Path = typer.Argument(..., help="Database folder."),
    verify: bool = typer.Option(False, help="Check every file's checksum."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Count, text model, sources and size on disk."""
    from tagseg.database import ClipRetrievalDatabase, PersistentTextDatabase
    from tagseg.database.clip_retrieval import is_clip_retrieval_folder

    with reported_errors():
        if is_clip_retrieval_folder(path):
            folder = ClipRetrievalDatabase(path)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            facts = {"path": str(path), "layout": "clip-retrieval", "count": len(folder), "dim": folder.dim, "size_bytes": size}
        else:
            facts = asdict(PersistentTextDatabase.open(path, verify=verify).info())
            facts["path"] = str(facts["path"])
        if as_json:
            console.print_json(json.dumps(facts))
            return
        table = Table(show_header=False, box=None)
        for key, value in facts.items():
            shown = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else value
            table.add_row(key.replace("_", " "), str(shown))
        console.print(table)


@app.command("default")
def default(
    text_model: str = typer.Option(
        "openai/clip-vit-large-patch14", "--text-model", help=f"{TEXT_MODEL_HELP} Default: the paper preset's."
    ),
    vocabulary: str = typer.Option(
        "default", help="Shipped database: default, or landmarks (default plus WordNet's named structures and places)."
    ),
) -> None:
    """Embed a shipped vocabulary now (otherwise done on first use) and print where it is cached."""
    from tagseg.cli.progress import item_columns, progress_bars
    from tagseg.database import default_database, default_database_path

    with reported_errors():
        encoder = _load_encoder(text_model)
        with progress_bars(item_columns("texts")):
            database = default_database(encoder, vocabulary=vocabulary)
        location = default_database_path(encoder, vocabulary=vocabulary)
        console.print(f"{len(database)} names embedded with {encoder.model_id}: {location}")


@app.command()
def search(
    path: Path = typer.Argument(..., help="Database folder (tagseg or clip-retrieval layout)."),
    queries: List[str] = typer.Argument(..., help="Query texts."),
    k: int = typer.Option(10, "-k", min=1, help="Texts retrieved per query."),
    text_model: Optional[str] = typer.Option(None, "--text-model", help=f"{TEXT_MODEL_HELP} Default: the database's."),
) -> None:
    """Text-to-text search: what a segment close to each query would retrieve."""
    from tagseg.database import open_database
    from tagseg.database.clip_retrieval import CLIP_VIT_L14, is_clip_retrieval_folder

    with reported_errors():
        default_model = CLIP_VIT_L14 if is_clip_retrieval_folder(path) else _stored_model(path)
        encoder = _load_encoder(text_model or default_model)
        database = open_database(path, encoder=encoder)
        template = getattr(database, "template", "{}")
        results = database.search(encoder.encode([template.format(q) for q in queries]).numpy(), k)
        for query, hits in zip(queries, results):
            table = Table(title=f"{query!r}", title_justify="left")
            table.add_column("similarity", justify="right")
            table.add_column("id", justify="right")
            table.add_column("text")
            for hit in hits:
                table.add_row(f"{hit.similarity:.3f}", str(hit.id), hit.text)
            console.print(table)
