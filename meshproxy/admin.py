"""Admin interface on ``0.0.0.0:<CONTRAST_ADMIN_PORT>``: Prometheus metrics, liveness and readiness.

Paths: ``/stats/prometheus`` (Envoy's path, which Contrast's e2e test scrapes) and ``/metrics`` serve the
text exposition; ``/live`` (also ``/healthz``) answers 200 while the event loop runs; ``/ready`` answers
200 once the listeners are up and the default-deny rule is gone, else 503. Only ``GET``/``HEAD`` with a
request head under 8 KiB, read within 5 s; anything else is a short 4xx and a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from meshproxy.metrics import Metrics

log = logging.getLogger("meshproxy.admin")

_MAX_HEAD = 8 << 10
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104 - Envoy's admin listens on all addresses in Contrast
_READ_TIMEOUT = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class AdminServer:
    def __init__(self, metrics: Metrics, port: int, host: str = ALL_ADDRESSES) -> None:
        self.metrics = metrics
        self.port = port
        self.host = host
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_HEAD)
        log.info("event=admin_listening port=%d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def respond(self, method: str, target: str) -> tuple[int, str, str]:
        """Pure routing: (status, content type, body) for a request line."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", "method not allowed\n"
        path = target.split("?", 1)[0]
        if path in ("/stats/prometheus", "/metrics"):
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()
        if path in ("/live", "/healthz"):
            return 200, "text/plain", "LIVE\n"
        if path == "/ready":
            return (200, "text/plain", "LIVE\n") if self.metrics.ready else (503, "text/plain", "NOT READY\n")
        return 404, "text/plain", "not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, ctype, body = 400, "text/plain", "bad request\n"
                method = "GET"
            else:
                method = parts[0]
                status, ctype, body = self.respond(method, parts[1])
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else payload))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, UnicodeDecodeError,
                ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
