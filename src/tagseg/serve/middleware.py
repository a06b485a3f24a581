"""Middleware of the service: the request-body limit and the per-request metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagseg.serve.errors import error_body, logger
from tagseg.serve.metrics import Metrics

__all__ = ["BodyLimit", "Observe", "PayloadTooLarge", "body_limit", "body_too_large_message"]


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


class BodyLimit:
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


class Observe:
    """Count every answered request by route and status, with its latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
