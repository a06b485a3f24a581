"""Routes about the service itself: the page, liveness, information, metrics."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, PlainTextResponse

from tagseg import __version__
from tagseg.serve.routes import service_of
from tagseg.serve.service import Service

STATIC = resources.files("tagseg.serve") / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:  # browsers ask for it whatever the page links
    return FileResponse(str(STATIC / "favicon.svg"), media_type="image/svg+xml")


@router.get("/health", tags=["service"], summary="Liveness; also Label Studio's health check")
async def health(service: Service = Depends(service_of)) -> dict[str, Any]:
    return {
        "status": "UP",
        "model_class": "tagseg.TAG",
        "model_version": service.model_version,
        "queue": {"running": service.queue.running, "waiting": service.queue.depth},
    }


@router.get("/v1/info", tags=["service"], summary="Models, database, settings and version")
async def info(service: Service = Depends(service_of)) -> dict[str, Any]:
    tag, settings = service.tag, service.settings
    return {
        "version": __version__,
        "model_version": service.model_version,
        "models": tag.models,
        "database": service.database.info(),
        "settings": tag.config.to_dict(),
        "service": {
            "workers": settings.workers,
            "queue_size": settings.queue_size,
            "request_timeout": settings.request_timeout,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": tag.config.models.max_pixels,
            "url_fetch": {"allow_hosts": list(settings.allow_hosts), "allow_private": settings.allow_private},
            "database_writes": settings.database_writes and service.database.updatable,
            "token_required": settings.token is not None,
        },
        "uptime_s": round(time.time() - service.started, 3),
    }


@router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(service: Service = Depends(service_of)) -> PlainTextResponse:
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
