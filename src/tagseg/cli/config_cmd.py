"""``tagseg config show``: the effective settings as TOML."""

from __future__ import annotations

import typer

from tagseg.cli import options as opt

app = typer.Typer(no_args_is_help=True, help="Show the settings a run would use.")


@app.command()
def show(
    preset: opt.Preset = None,
    config: opt.ConfigFile = None,
    feature_model: opt.FeatureModel = None,
    clip_model: opt.ClipModel = None,
    database: opt.Database = None,
    clusters: opt.Clusters = None,
    crf: opt.Crf = None,
    image_size: opt.ImageSize = None,
    top_k: opt.TopK = None,
    device: opt.Device = None,
    seed: opt.Seed = None,
    names: opt.Names = None,
    vocabulary: opt.Vocabulary = None,
    aliases: opt.Aliases = None,
    blocklist: opt.Blocklist = None,
    abstain_below: opt.AbstainBelow = None,
    min_region_area: opt.MinRegionArea = None,
) -> None:
    """Print the effective settings (preset, then --config file, then flags) as TOML.

    Save the output to a file, edit it and pass it to `tagseg segment --config FILE`.
    """
    from tagseg.api import config_toml

    with opt.reported_errors():
        settings = opt.build_config(
            preset, config, feature_model=feature_model, clip_model=clip_model, database=database,
            clusters=clusters, crf=crf, image_size=image_size, top_k=top_k, device=device, seed=seed,
            names=names, vocabulary=vocabulary, aliases=aliases, blocklist=blocklist,
            abstain_below=abstain_below, min_region_area=min_region_area,
        )
        typer.echo(config_toml(settings), nl=False)
