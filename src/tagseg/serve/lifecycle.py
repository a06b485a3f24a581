"""Stopping the service without dropping work: the first SIGTERM (or Ctrl+C) drains, the second stops.

While draining, requests already received run to the end (segmentations in the queue included)
and every new request is answered ``503 shutting_down`` with ``Retry-After``, so a load balancer or
client retries elsewhere or later; once nothing is in flight (or ``drain_timeout`` seconds have
passed) the server closes its socket and exits.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tagseg.serve.errors import error_body, logger


class Drain:
    """Whether the service is draining, and how many HTTP requests are in flight."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        self.draining = False
        self.in_flight = 0

    @property
    def idle(self) -> bool:
        """No request is in flight."""
        return self.in_flight == 0


class RefuseWhileDraining:
    """ASGI middleware: count requests in flight; while draining answer new ones 503 with Retry-After."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            body = error_body("shutting_down", "The server is shutting down; retry shortly.")
            headers = {"Retry-After": str(self.drain.retry_after), "Connection": "close"}
            await JSONResponse(body, 503, headers=headers)(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first stop signal drains ``drain`` before exiting; a second one exits at once."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_timeout = drain_timeout
        self.drain_deadline = float("inf")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining:
            self.force_exit = self.should_exit = True
            return
        logger.info("%s: finishing %d request(s) in flight, refusing new ones", signal.Signals(sig).name, self.drain.in_flight)
        self.drain.draining = True
        self.drain_deadline = time.monotonic() + self.drain_timeout

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining and (self.drain.idle or time.monotonic() > self.drain_deadline):
            self.should_exit = True
        return await super().on_tick(counter)


def run_server(app: ASGIApp, drain: Drain, *, host: str, port: int, log_level: str, drain_timeout: float) -> None:
    """Serve ``app`` on ``host:port`` until a stop signal, then drain (at most ``drain_timeout`` s) and exit."""
    DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level), drain, drain_timeout).run()
