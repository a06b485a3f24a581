"""The ``tagseg`` command line: a thin layer over the public Python API.

Each command group lives in its own module and is registered here.
"""

from __future__ import annotations

import typer

from tagseg.cli import config_cmd, db, models_cmd, segment

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
from tagseg.cli import eval as _eval  # noqa: E402,F401  (registers `tagseg eval`; needs `app` above)
from tagseg.cli import serve as _serve  # noqa: E402,F401  (registers `tagseg serve`; needs `app` above)
from tagseg.cli import export as _export  # noqa: E402,F401  (registers `tagseg export`; needs `app` above)


def main() -> None:
    """Entry point of the ``tagseg`` console script."""
    app()
