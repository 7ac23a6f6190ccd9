"""A minimal asyncio HTTP/1.1 server for attestation endpoints, probes and metrics.

One request per connection (``Connection: close``), strict limits: request head 8 KiB, body at most the
route's limit (413 above it), a deadline for sending the request, no chunked bodies. Enough for
``POST /attest`` and ``GET`` probes; nothing here is meant to be a general web server.

The head parser is our own, not h11: with one request per connection and Content-Length bodies only,
the few lines below are the whole grammar (property-tested), and the pod-VM and initializer images
carry no extra dependency for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl as ssl_mod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD", "REASONS", "HttpError", "HttpServer", "Request", "Response", "Route", "json_error",
    "parse_head", "text_error",
]

log = logging.getLogger("common.http")

MAX_HEAD = 8192
REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    412: "Precondition Failed", 413: "Payload Too Large", 415: "Unsupported Media Type",
    500: "Internal Server Error", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer_cert_der: bytes | None = None  # the verified client certificate on a TLS listener


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True)
class Route:
    method: str  # one method or several separated by "|", e.g. "GET|HEAD"
    handler: Callable[[Request], Awaitable[Response]]
    max_body: int = 0


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_error(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode())


def text_error(status: int, message: str) -> Response:
    return Response(status, f"{message}\n".encode(), "text/plain")


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path without query, lower-cased headers) of a request head without its final CRLFCRLF."""
    text = head.decode("latin-1")  # latin-1 decodes every byte string
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "bad header line")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


class HttpServer:
    """`routes` maps exact paths; a key ending in "/" matches every path below it (one segment or more).

    ``error_response`` renders our own errors (bad request, 404, 405, 413, handler failures).
    """

    def __init__(
        self, host: str, port: int, routes: dict[str, Route], name: str,
        ssl: ssl_mod.SSLContext | None = None, *, request_timeout: float = 10.0,
        error_response: Callable[[int, str], Response] = json_error,
    ) -> None:
        self.host, self.port, self.routes, self.name = host, port, routes, name
        self._ssl = ssl
        self._timeout = request_timeout
        self._error = error_response
        self._server: asyncio.Server | None = None

    def _route(self, path: str) -> Route | None:
        route = self.routes.get(path)
        if route is not None:
            return route
        for key, candidate in self.routes.items():
            if key.endswith("/") and path.startswith(key):
                return candidate
        return None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, ssl=self._ssl, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _read(self, reader: asyncio.StreamReader, peer_cert_der: bytes | None) -> Request:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpError(413, "request head too large") from exc
        except asyncio.IncompleteReadError as exc:
            raise HttpError(400, "incomplete request") from exc
        if len(head) > MAX_HEAD:
            raise HttpError(413, "request head too large")
        method, path, headers = parse_head(head[:-4])
        route = self._route(path)
        if route is None:
            raise HttpError(404, f"no such path {path[:100]}")
        if method not in route.method.split("|"):
            raise HttpError(405, f"{path} expects {route.method}")
        if "transfer-encoding" in headers:
            raise HttpError(400, "chunked requests are not supported")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            raise HttpError(400, "bad Content-Length") from exc
        if length < 0:
            raise HttpError(400, "bad Content-Length")
        if length > route.max_body:
            raise HttpError(413, f"body has {length} bytes, limit {route.max_body}")
        body = await reader.readexactly(length) if length else b""
        return Request(method, path, headers, body, peer_cert_der)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                peer = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
                request = await asyncio.wait_for(self._read(reader, peer), self._timeout)
                method = request.method
                route = self._route(request.path)
                assert route is not None
                response = await route.handler(request)
            except HttpError as exc:
                response = self._error(exc.status, str(exc))
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl_mod.SSLError):
                return
            except Exception:
                log.exception("event=http_handler_failed server=%s", self.name)
                response = self._error(500, "internal error")
            reason = REASONS.get(response.status, "Unknown")
            head = (
                f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else response.body))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
