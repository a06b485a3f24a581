"""The FastAPI application: one :class:`~tagseg.serve.service.Service` behind the routes of
:mod:`tagseg.serve.routes` and the Label Studio backend, with the body limit and metrics middleware."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tagseg import __version__
from tagseg.pipeline import TAG
from tagseg.serve.errors import install_error_handlers
from tagseg.serve.labelstudio import LabelStudioBackend
from tagseg.serve.lifecycle import Drain, RefuseWhileDraining
from tagseg.serve.middleware import BodyLimit, Observe
from tagseg.serve.routes import database, segment, status
from tagseg.serve.service import Service
from tagseg.serve_settings import ServeSettings


def create_app(tag: TAG, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``tag`` (models already loaded) under ``settings``."""
    service = Service(tag, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.queue.shutdown()

    app = FastAPI(
        title="tagseg",
        version=__version__,
        description=(
            "Guidance-free open-vocabulary semantic segmentation (TAG). Send an image, get named segments "
            "with masks and the evidence behind each name. Also a Label Studio ML backend."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.drain = Drain(service.settings.retry_after)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_upload_bytes=service.settings.max_upload_bytes)
    app.add_middleware(RefuseWhileDraining, drain=app.state.drain)
    app.add_middleware(Observe, metrics=service.metrics)
    app.mount("/static", StaticFiles(directory=str(status.STATIC)), name="static")
    for routes in (status.router, segment.router, database.router, LabelStudioBackend(service).router()):
        app.include_router(routes)
    return app
