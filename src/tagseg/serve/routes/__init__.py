"""The service's routes, one module per group; each route reaches the :class:`~tagseg.serve.service.Service`
of its app through :func:`service_of`."""

from __future__ import annotations

from fastapi import Request

from tagseg.serve.service import Service

__all__ = ["service_of"]


def service_of(request: Request) -> Service:
    """The service of the app answering ``request`` (a route dependency)."""
    return request.app.state.service
