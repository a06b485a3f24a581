"""The ``tagseg`` command line: a thin layer over the public Python API.

Each command group lives in its own module and is registered here (the modules never import ``app``).
"""

from __future__ import annotations

import typer

from tagseg.cli import config_cmd, db, export, models_cmd, segment, serve
from tagseg.cli import eval as eval_cmd

app = typer.Typer(
    name="tagseg",
    help="Guidance-free open-vocabulary semantic segmentation: give it images, get named segments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(db.app, name="db", help="Build, update, inspect and search text databases.")
app.command(rich_help_panel="Segment")(segment.segment)
app.add_typer(models_cmd.app, name="models")
app.add_typer(config_cmd.app, name="config")
app.command("eval")(eval_cmd.eval_command)
app.command("serve", rich_help_panel="Serve")(serve.serve)
app.command("export", rich_help_panel="Segment")(export.export)


def main() -> None:
    """Entry point of the ``tagseg`` console script."""
    app()
