"""Admin interface on ``0.0.0.0:<CONTRAST_ADMIN_PORT>``: Prometheus metrics, liveness and readiness.

Paths: ``/stats/prometheus`` (Envoy's path, which Contrast's e2e test scrapes) and ``/metrics`` serve the
text exposition; ``/live`` (also ``/healthz``) answers 200 while the event loop runs; ``/ready`` answers
200 once the listeners are up and the default-deny rule is gone, else 503. Only ``GET``/``HEAD`` with a
request head under 8 KiB, read within 5 s, no body; anything else is a short 4xx and a close. The server
is the shared one (common.http).
"""

from __future__ import annotations

import logging

from common.http import HttpServer, Request, Response, Route
from common.metrics import CONTENT_TYPE
from meshproxy.metrics import Metrics

log = logging.getLogger("meshproxy.admin")

ALL_ADDRESSES = "0.0.0.0"  # noqa: S104 - Envoy's admin listens on all addresses in Contrast
_READ_TIMEOUT = 5.0
_ERRORS = {400: "bad request", 404: "not found", 405: "method not allowed"}


def _error(status: int, message: str) -> Response:
    return Response(status, f"{_ERRORS.get(status, message)}\n".encode(), "text/plain")


class AdminServer:
    def __init__(self, metrics: Metrics, port: int, host: str = ALL_ADDRESSES) -> None:
        self.metrics = metrics
        self.port = port
        self.host = host
        self._server: HttpServer | None = None

    def routes(self) -> dict[str, Route]:
        prometheus = Route("GET|HEAD", self._prometheus)
        live = Route("GET|HEAD", self._live)
        return {"/stats/prometheus": prometheus, "/metrics": prometheus, "/live": live, "/healthz": live,
                "/ready": Route("GET|HEAD", self._ready)}

    async def start(self) -> None:
        self._server = HttpServer(self.host, self.port, self.routes(), "admin",
                                  request_timeout=_READ_TIMEOUT, error_response=_error)
        await self._server.start()
        self.port = self._server.port
        log.info("event=admin_listening port=%d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def _prometheus(self, _request: Request) -> Response:
        return Response(200, self.metrics.render().encode(), CONTENT_TYPE)

    async def _live(self, _request: Request) -> Response:
        return Response(200, b"LIVE\n", "text/plain")

    async def _ready(self, _request: Request) -> Response:
        if self.metrics.ready:
            return Response(200, b"LIVE\n", "text/plain")
        return Response(503, b"NOT READY\n", "text/plain")
