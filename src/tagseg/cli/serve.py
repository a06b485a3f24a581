"""``tagseg serve``: the HTTP API, the web page and the Label Studio ML backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from tagseg.cli import options as opt
from tagseg.config import TAGConfig

SERVICE = "Service"
LABEL_STUDIO = "Label Studio"


@opt.with_settings
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).", rich_help_panel=SERVICE)] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.", rich_help_panel=SERVICE)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Images segmented at the same time.", rich_help_panel=SERVICE)] = 1,
    queue_size: Annotated[int, typer.Option(min=0, help="Requests that may wait for a worker; beyond that: 429.", rich_help_panel=SERVICE)] = 8,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a request may take before 504.", rich_help_panel=SERVICE)] = 120.0,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest image file accepted (MB).", rich_help_panel=SERVICE)] = 20.0,
    allow_host: Annotated[Optional[list[str]], typer.Option(help="Host that image URLs may point to (repeat; *.example.com for sub-domains). Default: any public host.", rich_help_panel=SERVICE, show_default=False)] = None,
    allow_private: Annotated[bool, typer.Option(help="Let image URLs reach private and loopback addresses.", rich_help_panel=SERVICE)] = False,
    database_writes: Annotated[bool, typer.Option(help="Enable the endpoints that add and remove database texts.", rich_help_panel=SERVICE)] = False,
    token: Annotated[Optional[str], typer.Option(envvar="TAGSEG_TOKEN", help="Bearer token the database-writing endpoints require.", rich_help_panel=SERVICE, show_default=False)] = None,
    label_studio_url: Annotated[Optional[str], typer.Option(envvar="LABEL_STUDIO_URL", help="Label Studio's address, for task images under /data/.", rich_help_panel=LABEL_STUDIO, show_default=False)] = None,
    label_studio_api_key: Annotated[Optional[str], typer.Option(envvar="LABEL_STUDIO_API_KEY", help="Label Studio API key (legacy token) for those images.", rich_help_panel=LABEL_STUDIO, show_default=False)] = None,
    label_mode: Annotated[str, typer.Option(help="auto, map (onto the project's labels) or free (segment names as they are).", rich_help_panel=LABEL_STUDIO)] = "auto",
    label_aliases: Annotated[Optional[Path], typer.Option(help="JSON object mapping segment names to project labels.", rich_help_panel=LABEL_STUDIO, show_default=False)] = None,
    label_abstain_below: Annotated[float, typer.Option(help="In map mode, drop segments whose best label similarity is lower.", rich_help_panel=LABEL_STUDIO)] = 0.5,
    model_version: Annotated[Optional[str], typer.Option(help="Model version shown in Label Studio (default: from the models).", rich_help_panel=LABEL_STUDIO, show_default=False)] = None,
    *,
    settings: TAGConfig,
) -> None:
    """Serve the page (GET /), the API (/v1/..., OpenAPI at /docs) and a Label Studio ML backend.

    Models load once at start-up; requests queue for a fixed number of workers.
    """
    with opt.reported_errors():
        from tagseg.serve import ServeSettings, create_app  # raises a clear error without the serve extra

        from tagseg.pipeline import TAG
        from tagseg.serve.lifecycle import run_server

        serve_settings = ServeSettings(
            workers=workers,
            queue_size=queue_size,
            request_timeout=timeout,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            allow_hosts=tuple(allow_host or ()),
            allow_private=allow_private,
            database_writes=database_writes,
            token=token or None,
            label_studio_url=label_studio_url,
            label_studio_api_key=label_studio_api_key,
            label_mode=label_mode,  # type: ignore[arg-type]  (checked by ServeSettings)
            label_aliases=_read_aliases(label_aliases),
            abstain_threshold=label_abstain_below,
            model_version=model_version,
        )
        if host not in ("127.0.0.1", "localhost", "::1") and database_writes and not token:
            opt.errors.print("[yellow]Warning:[/yellow] database writes are on without a token on a public address.")
        opt.errors.print("Loading models…")
        tag = TAG.from_pretrained(settings)
    opt.errors.print(f"Serving on http://{host}:{port}/ (API docs at /docs); Ctrl+C or SIGTERM finishes the requests in flight and stops.")
    app = create_app(tag, serve_settings)
    log_level = os.environ.get("TAGSEG_LOG_LEVEL", "info")
    run_server(app, app.state.drain, host=host, port=port, log_level=log_level, drain_timeout=timeout)


def _read_aliases(path: Optional[Path]) -> dict[str, str]:
    if path is None:
        return {}
    from tagseg.errors import ConfigError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot read the alias table {path}: {error}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"The alias table {path} must be a JSON object of name -> label strings.")
    return data
