"""The text database: search, and (when enabled) adding and removing texts."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, Callable

from fastapi import APIRouter, Depends, Query, Request

from tagseg.errors import DatabaseError
from tagseg.serve.errors import ApiError, error_responses
from tagseg.serve.routes import service_of
from tagseg.serve.schemas import TextsRequest
from tagseg.serve.service import Service

router = APIRouter(tags=["database"])


def _single_query_values(request: Request) -> None:
    """Refuse a query parameter given twice (``?k=3&k=50``) instead of silently taking one."""
    repeated = sorted({key for key in request.query_params if len(request.query_params.getlist(key)) > 1})
    if repeated:
        raise ApiError(422, "repeated_parameter", f"Give each query parameter once: {', '.join(repeated)} repeated.")


async def _run_blocking(job: Callable[[], Any]) -> Any:
    """Run a database change on a thread; a :class:`DatabaseError` becomes 409."""
    try:
        return await asyncio.to_thread(job)
    except DatabaseError as error:
        raise ApiError(409, "database_error", str(error)) from None


def require_writes(request: Request, service: Service = Depends(service_of)) -> None:
    """Refuse a database change unless writes are on, the token (if any) is given and the database takes them."""
    settings = service.settings
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
            f"This {type(service.tag.database).__name__} cannot be changed here; build your own with "
            "`tagseg db build` and start the server with --database DIR.",
        )


_WRITE_ERRORS = error_responses(400, 401, 403, 409, 422)


@router.get("/v1/database/search", summary="Texts closest to a query", dependencies=[Depends(_single_query_values)])
async def database_search(
    q: str = Query(min_length=1, max_length=1000, description="Query text"),
    k: int = Query(10, ge=1, le=100),
    service: Service = Depends(service_of),
) -> dict[str, Any]:
    return {"query": q, "hits": service.database.search(q, k)}


@router.post("/v1/database/add", summary="Add texts", dependencies=[Depends(require_writes)], responses=_WRITE_ERRORS)
async def database_add(body: TextsRequest, service: Service = Depends(service_of)) -> dict[str, Any]:
    added = await _run_blocking(lambda: service.database.add(body.texts))
    return {"added": added, "size": len(service.tag.database)}


@router.post("/v1/database/remove", summary="Remove texts", dependencies=[Depends(require_writes)], responses=_WRITE_ERRORS)
async def database_remove(body: TextsRequest, service: Service = Depends(service_of)) -> dict[str, Any]:
    removed = await _run_blocking(lambda: service.database.remove(body.texts))
    return {"removed": removed, "size": len(service.tag.database)}
