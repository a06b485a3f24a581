"""The FastAPI application: segmentation API, database endpoints, metrics, the page, Label Studio."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagseg import __version__
from tagseg.errors import DatabaseError
from tagseg.pipeline import TAG
from tagseg.serve import labelstudio
from tagseg.serve.errors import ApiError, error_body, error_responses, install_error_handlers, logger
from tagseg.serve.lifecycle import Drain, RefuseWhileDraining
from tagseg.serve.schemas import SEGMENT_EXAMPLE, SEGMENT_REQUEST_BODY, SegmentJSON, SegmentSettings, TextsRequest
from tagseg.serve.service import Service
from tagseg.serve.settings import ServeSettings

STATIC = resources.files("tagseg.serve") / "static"
_FORM_FIELDS = frozenset({"image", *SegmentSettings.model_fields})


def create_app(tag: TAG, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``tag`` (models already loaded) under ``settings``."""
    settings = settings or ServeSettings()
    service = Service(tag, settings)

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
    app.state.drain = Drain(settings.retry_after)
    install_error_handlers(app)
    app.add_middleware(_BodyLimit, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RefuseWhileDraining, drain=app.state.drain)
    app.add_middleware(_Observe, service=service)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # browsers ask for it whatever the page links
        return FileResponse(str(STATIC / "favicon.svg"), media_type="image/svg+xml")

    @app.get("/health", tags=["service"], summary="Liveness; also Label Studio's health check")
    async def health() -> dict[str, Any]:
        return {
            "status": "UP",
            "model_class": "tagseg.TAG",
            "model_version": service.model_version,
            "queue": {"running": service.queue.running, "waiting": service.queue.depth},
        }

    @app.get("/v1/info", tags=["service"], summary="Models, database, settings and version")
    async def info() -> dict[str, Any]:
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

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post(
        "/v1/segment",
        tags=["segmentation"],
        summary="Segment one image and name its segments",
        description=(
            "Send the image as a multipart upload (field `image`) or as JSON with `image_base64` or `image_url`. "
            "The answer is the per-image JSON that `tagseg segment` writes."
        ),
        openapi_extra={"requestBody": SEGMENT_REQUEST_BODY},
        responses={
            200: {"description": "Named segments", "content": {"application/json": {"example": SEGMENT_EXAMPLE}}},
            **error_responses(400, 413, 415, 422, 429, 502, 503, 504),
        },
    )
    async def segment(request: Request) -> JSONResponse:
        data, fields = await _read_segment_request(request, service)
        options = fields.options()
        body = await service.segment(data, options, lambda rgb, result: service.result_json(rgb, result, options))
        return JSONResponse(body)

    @app.get(
        "/v1/database/search",
        tags=["database"],
        summary="Texts closest to a query",
        dependencies=[Depends(_single_query_values)],
    )
    async def database_search(
        q: str = Query(min_length=1, max_length=1000, description="Query text"),
        k: int = Query(10, ge=1, le=100),
    ) -> dict[str, Any]:
        return {"query": q, "hits": service.database.search(q, k)}

    def require_writes(request: Request) -> None:
        if not settings.database_writes:
            raise ApiError(403, "database_writes_disabled", "Database changes are off; start the server with --database-writes.")
        if settings.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
                raise ApiError(401, "unauthorized", "A valid bearer token is required.", {"WWW-Authenticate": "Bearer"})
        if not service.database.updatable:
            raise ApiError(
                409,
                "database_read_only",
                f"This {type(tag.database).__name__} cannot be changed here; build your own with "
                "`tagseg db build` and start the server with --database DIR.",
            )

    write_errors = error_responses(400, 401, 403, 409, 422)

    @app.post("/v1/database/add", tags=["database"], summary="Add texts", dependencies=[Depends(require_writes)], responses=write_errors)
    async def database_add(body: TextsRequest) -> dict[str, Any]:
        added = await _run_blocking(service, lambda: service.database.add(body.texts))
        return {"added": added, "size": len(tag.database)}

    @app.post("/v1/database/remove", tags=["database"], summary="Remove texts", dependencies=[Depends(require_writes)], responses=write_errors)
    async def database_remove(body: TextsRequest) -> dict[str, Any]:
        removed = await _run_blocking(service, lambda: service.database.remove(body.texts))
        return {"removed": removed, "size": len(tag.database)}

    app.include_router(labelstudio.router(service))
    return app


def _single_query_values(request: Request) -> None:
    """Refuse a query parameter given twice (``?k=3&k=50``) instead of silently taking one."""
    repeated = sorted({key for key in request.query_params if len(request.query_params.getlist(key)) > 1})
    if repeated:
        raise ApiError(422, "repeated_parameter", f"Give each query parameter once: {', '.join(repeated)} repeated.")


async def _run_blocking(service: Service, job: Any) -> Any:
    """Run a database change on a thread; a :class:`DatabaseError` becomes 409."""
    try:
        return await asyncio.to_thread(job)
    except DatabaseError as error:
        raise ApiError(409, "database_error", str(error)) from None


async def _read_segment_request(request: Request, service: Service) -> tuple[bytes, SegmentSettings]:
    """The image bytes and settings of a multipart or JSON segmentation request."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=len(_FORM_FIELDS) + 8)
        unknown = sorted(set(form.keys()) - _FORM_FIELDS)
        if unknown:
            raise ApiError(422, "unknown_field", f"Unknown form field(s): {', '.join(unknown)}.")
        repeated = sorted({key for key in form.keys() if key != "formats" and len(form.getlist(key)) > 1})
        if repeated:
            raise ApiError(422, "repeated_field", f"Give each form field once: {', '.join(repeated)} repeated.")
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_image", "Send the image as a file in the form field 'image'.")
        raw: dict[str, Any] = {key: form.get(key) for key in form.keys() if key not in ("image", "formats")}
        formats = [f.strip() for value in form.getlist("formats") for f in str(value).split(",") if f.strip()]
        fields = _validate(SegmentSettings, {**raw, "formats": formats})
        return await upload.read(), fields
    if media_type == "application/json":
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, "invalid_json", f"The body is not valid JSON: {error}") from None
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid_request", "The JSON body must be an object.")
        unknown = sorted(set(payload) - set(SegmentJSON.model_fields))
        if unknown:
            raise ApiError(422, "unknown_field", f"Unknown field(s): {', '.join(unknown)}.")
        body = _validate(SegmentJSON, payload)
        if body.image_url is not None:
            return await service.fetch(body.image_url), body
        return _decode_base64(body.image_base64 or ""), body
    raise ApiError(
        415, "unsupported_media_type", "Send multipart/form-data with an 'image' file, or application/json."
    )


def _validate(model: type[SegmentSettings], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_base64", "image_base64 is not valid base64.") from None


def body_limit(max_upload_bytes: int) -> int:
    """The largest request body accepted for images of ``max_upload_bytes``: room for base64 (4/3) and 1 MiB of form or JSON."""
    return max_upload_bytes * 4 // 3 + 1024 * 1024


def body_too_large_message(max_upload_bytes: int) -> str:
    """What a 413 for the request body says: the configured image limit and the body limit it implies."""
    return (
        f"The request body is larger than {body_limit(max_upload_bytes):,} bytes: this server takes images of up to "
        f"{max_upload_bytes:,} bytes ({max_upload_bytes / 1024 / 1024:g} MB, --max-upload-mb), with room for base64."
    )


class PayloadTooLarge(StarletteHTTPException):
    """The request body is over the server's limit."""

    def __init__(self, max_upload_bytes: int) -> None:
        super().__init__(413, body_too_large_message(max_upload_bytes))


class _BodyLimit:
    """Refuse request bodies over the limit for ``max_upload_bytes`` images, by header up front or while they stream in."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_bytes = body_limit(max_upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = body_too_large_message(self.max_upload_bytes)
            logger.warning("%s %s -> 413 payload_too_large: %s", scope["method"], scope["path"], message)
            await _send_json(send, 413, error_body("payload_too_large", message))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(self.max_upload_bytes)
            return message

        await self.app(scope, limited, send)


class _Observe:
    """Count every answered request by route and status, with its latency."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.metrics = service.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - start)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
