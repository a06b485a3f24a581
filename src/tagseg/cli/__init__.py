"""The ``tagseg`` command line: a thin layer over the public Python API.

Each command group lives in its own module and is registered here (the modules never import ``app``).
Every command and group prints its ``--help`` as plain text (:mod:`tagseg.cli.help`).
"""

from __future__ import annotations

import typer

from tagseg.cli import config_cmd, db, export, models_cmd, segment, serve
from tagseg.cli import eval as eval_cmd
from tagseg.cli.help import PlainCommand, PlainGroup

app = typer.Typer(
    name="tagseg",
    help="Guidance-free open-vocabulary semantic segmentation: give it images, get named segments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=PlainGroup,
)
for group in (db.app, models_cmd.app, config_cmd.app):
    for info in group.registered_commands:
        info.cls = PlainCommand
app.add_typer(db.app, name="db", help="Build, update, inspect and search text databases.", cls=PlainGroup)
app.command(rich_help_panel="Segment", cls=PlainCommand)(segment.segment)
app.add_typer(models_cmd.app, name="models", cls=PlainGroup)
app.add_typer(config_cmd.app, name="config", cls=PlainGroup)
app.command("eval", cls=PlainCommand)(eval_cmd.eval_command)
app.command("serve", rich_help_panel="Serve", cls=PlainCommand)(serve.serve)
app.command("export", rich_help_panel="Segment", cls=PlainCommand)(export.export)


def main() -> None:
    """Entry point of the ``tagseg`` console script."""
    app()
