"""``tagseg serve``: the HTTP API, the web page and the Label Studio ML backend."""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Optional

import typer

from tagseg.cli import options as opt
from tagseg.config import TAGConfig
from tagseg.serve_settings import SERVICE, ServeSettings


@opt.with_settings
@opt.with_declared(ServeSettings, "service")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).", rich_help_panel=SERVICE)] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.", rich_help_panel=SERVICE)] = 8000,
    max_upload_mb: Annotated[Optional[float], typer.Option(min=0.001, help="Largest image file accepted, in MB (default 20).", rich_help_panel=SERVICE, show_default=False)] = None,
    *,
    service: ServeSettings,
    settings: TAGConfig,
) -> None:
    """Serve the page (GET /), the API (/v1/..., OpenAPI at /docs) and a Label Studio ML backend.

    Models load once at start-up; requests queue for a fixed number of workers.
    """
    with opt.reported_errors():
        from tagseg.serve import create_app  # raises a clear error without the serve extra

        from tagseg.cli.progress import item_columns, progress_bars
        from tagseg.pipeline import TAG
        from tagseg.serve.lifecycle import run_server

        if max_upload_mb is not None:
            service = dataclasses.replace(service, max_upload_bytes=int(max_upload_mb * 1024 * 1024))
        if host not in ("127.0.0.1", "localhost", "::1") and service.database_writes and not service.token:
            opt.errors.print("[yellow]Warning:[/yellow] database writes are on without a token on a public address.")
        opt.errors.print("Loading models…")
        with progress_bars(item_columns("texts")):  # the shipped vocabulary is embedded on first use
            tag = TAG.from_pretrained(settings)
    opt.errors.print(f"Serving on http://{host}:{port}/ (API docs at /docs); Ctrl+C or SIGTERM finishes the requests in flight and stops.")
    app = create_app(tag, service)
    log_level = os.environ.get("TAGSEG_LOG_LEVEL", "info")
    run_server(app, app.state.drain, host=host, port=port, log_level=log_level, drain_timeout=service.request_timeout)
