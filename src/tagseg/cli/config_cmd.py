"""``tagseg config show``: the effective settings as TOML."""

from __future__ import annotations

import typer

from tagseg.cli import options as opt
from tagseg.config import TAGConfig, config_toml

app = typer.Typer(no_args_is_help=True, help="Show the settings a run would use.")


@app.command()
@opt.with_settings
def show(
    *,
    settings: TAGConfig,
) -> None:
    """Print the effective settings (preset, then --config file, then flags) as TOML.

    Save the output to a file, edit it and pass it to `tagseg segment --config FILE`.
    """
    with opt.reported_errors():
        typer.echo(config_toml(settings), nl=False)
