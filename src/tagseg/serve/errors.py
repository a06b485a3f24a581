"""One JSON error shape for every failure the service reports: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


logger = logging.getLogger("tagseg.serve")


class ApiError(Exception):
    """A failure with its HTTP status, a stable machine-readable code and a readable message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message, **extra}}


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {s: {"description": "Error", "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s in statuses}


def error_response(request: Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer, with its reason in the server log (the access log shows only the status)."""
    logger.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, body["error"]["code"], body["error"]["message"])
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer API errors, validation errors and routing errors with the shared JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(request, error.status, error_body(error.code, error.message), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": [str(part) for part in e.get("loc", ())], "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in error.errors()
        ]
        summary = "; ".join(f"{'.'.join(p['location'])}: {p['message']}" for p in problems)
        return error_response(request, 422, error_body("invalid_request", summary, problems=problems))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        # Keeps the JSON contract for bugs too; the server still logs the traceback.
        return error_response(request, 500, error_body("internal_error", "The server failed on this request."))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            error.status_code, "http_error"
        )
        return error_response(request, error.status_code, error_body(code, str(error.detail)), getattr(error, "headers", None))
