"""Options shared by the commands that build pipeline settings (segment, config show, models)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from tagseg.config import PRESETS, TAGConfig
from tagseg.errors import TagsegError

errors = Console(stderr=True, highlight=False, soft_wrap=True)

SETTINGS = "Settings (override the preset and --config)"

Preset = Annotated[
    Optional[str],
    typer.Option("--preset", "-p", help=f"Named settings: {', '.join(PRESETS)} (default: paper).", show_default=False),
]
ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        "-c",
        envvar="TAGSEG_CONFIG",
        help="TOML file of settings (any `tagseg config show` key; `preset = ...` too). Flags override it.",
        show_default=False,
    ),
]
FeatureModel = Annotated[
    Optional[str],
    typer.Option(help="DINOv2 model: Hugging Face id or local directory.", rich_help_panel=SETTINGS, show_default=False),
]
ClipModel = Annotated[
    Optional[str],
    typer.Option(help="CLIP model: Hugging Face id or local directory.", rich_help_panel=SETTINGS, show_default=False),
]
Database = Annotated[
    Optional[str],
    typer.Option(
        help="Text database: 'default' (shipped vocabulary) or a folder made by `tagseg db build`.",
        rich_help_panel=SETTINGS,
        show_default=False,
    ),
]
Clusters = Annotated[
    Optional[str],
    typer.Option(
        "--clusters",
        "-k",
        help="k of k-means: segment candidates per image, or 'auto' to choose it per image.",
        rich_help_panel=SETTINGS,
        show_default=False,
    ),
]
Crf = Annotated[
    Optional[bool],
    typer.Option("--crf/--no-crf", help="Refine segment edges with a dense CRF.", rich_help_panel=SETTINGS, show_default=False),
]
ImageSize = Annotated[
    Optional[int],
    typer.Option(min=14, help="Working size in pixels the models see.", rich_help_panel=SETTINGS, show_default=False),
]
TopK = Annotated[
    Optional[int],
    typer.Option(min=1, help="Texts retrieved per segment.", rich_help_panel=SETTINGS, show_default=False),
]
Device = Annotated[
    Optional[str],
    typer.Option(help="auto, cpu, cuda, cuda:1, mps ...", rich_help_panel=SETTINGS, show_default=False),
]
Seed = Annotated[
    Optional[int],
    typer.Option(help="Random seed of k-means.", rich_help_panel=SETTINGS, show_default=False),
]

NAMING = "Naming (all off by default; see README)"

Names = Annotated[
    Optional[str],
    typer.Option(help="Candidate names: 'words' (the paper's single words) or 'phrases' (also multi-word names).", rich_help_panel=NAMING, show_default=False),
]
Vocabulary = Annotated[
    Optional[str],
    typer.Option(help="Allowed names: a file (one a line) or 'cat,dog,...'; each segment gets the closest.", rich_help_panel=NAMING, show_default=False),
]
Aliases = Annotated[
    Optional[str],
    typer.Option(help="Aliases: a file of lines 'kitten, kitty -> cat' (many names to one).", rich_help_panel=NAMING, show_default=False),
]
Blocklist = Annotated[
    Optional[str],
    typer.Option(help="Names never to give: a file (one a line) or 'thing,stuff'.", rich_help_panel=NAMING, show_default=False),
]
AbstainBelow = Annotated[
    Optional[float],
    typer.Option(help="Name a segment 'unknown' when its best name scores below this cosine.", rich_help_panel=NAMING, show_default=False),
]
MinRegionArea = Annotated[
    Optional[float],
    typer.Option(min=0.0, max=1.0, help="Merge regions smaller than this fraction of the image into their most similar neighbour.", rich_help_panel=NAMING, show_default=False),
]


def build_config(
    preset: Optional[str],
    config: Optional[Path],
    *,
    feature_model: Optional[str] = None,
    clip_model: Optional[str] = None,
    database: Optional[str] = None,
    clusters: Optional[str] = None,
    crf: Optional[bool] = None,
    image_size: Optional[int] = None,
    top_k: Optional[int] = None,
    device: Optional[str] = None,
    seed: Optional[int] = None,
    names: Optional[str] = None,
    vocabulary: Optional[str] = None,
    aliases: Optional[str] = None,
    blocklist: Optional[str] = None,
    abstain_below: Optional[float] = None,
    min_region_area: Optional[float] = None,
) -> TAGConfig:
    """The effective settings: preset, then the TOML file, then the flags that were given."""
    from tagseg.api import resolve_config
    from tagseg.controls import read_aliases, read_words

    return resolve_config(
        preset,
        config,
        feature_model=feature_model,
        clip_model=clip_model,
        database=database,
        num_clusters=_clusters(clusters),
        crf=crf,
        image_size=image_size,
        top_k=top_k,
        device=device,
        seed=seed,
        names=names,
        vocabulary=read_words(vocabulary) if vocabulary else None,
        aliases=read_aliases(aliases) if aliases else None,
        blocklist=read_words(blocklist) if blocklist else None,
        abstain_threshold=abstain_below,
        min_region_area=min_region_area,
    )


def _clusters(value: Optional[str]) -> int | str | None:
    """``--clusters``: a positive number or ``auto``."""
    if value is None or value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise typer.BadParameter(f"{value!r} is neither a positive number nor 'auto'.", param_hint="--clusters")


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn a :class:`TagsegError` into one red line on stderr and exit status 1, without a traceback."""
    try:
        yield
    except TagsegError as error:
        errors.print(f"[red]Error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
