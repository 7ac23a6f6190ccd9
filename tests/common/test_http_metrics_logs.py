"""common.http, common.metrics, common.logs: the shared server's limits, the exposition text, the log keys."""

from __future__ import annotations

import asyncio
import io
import logging
import re

from common.http import HttpServer, Request, Response, Route, text_error
from common.logs import setup_logging
from common.metrics import Registry, render_family


async def _exchange(server: HttpServer, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    out = await reader.read()
    writer.close()
    await writer.wait_closed()
    return out


def test_head_gets_no_body_and_errors_use_the_renderer() -> None:
    async def hello(_req: Request) -> Response:
        return Response(200, b"hello\n", "text/plain")

    async def main() -> list[bytes]:
        server = HttpServer("127.0.0.1", 0, {"/h": Route("GET|HEAD", hello)}, "t", error_response=text_error)
        await server.start()
        try:
            return [await _exchange(server, raw) for raw in (
                b"GET /h HTTP/1.1\r\n\r\n", b"HEAD /h HTTP/1.1\r\n\r\n", b"POST /h HTTP/1.1\r\n\r\n",
                b"GET /h HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")]
        finally:
            await server.close()

    get, head, post, big = asyncio.run(main())
    assert get.startswith(b"HTTP/1.1 200 OK") and get.endswith(b"\r\n\r\nhello\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 6" in head and head.endswith(b"\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405") and post.endswith(b"/h expects GET|HEAD\n")
    assert big.startswith(b"HTTP/1.1 413")


def test_exposition_text() -> None:
    reg = Registry()
    c = reg.counter("x_total", "Things.", ("kind",))
    c.inc(kind='a"b\\c\nd')
    c.inc(2.5, kind="z")
    reg.gauge("g", "A gauge.")
    assert reg.render() == (
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        'x_total{kind="a\\"b\\\\c\\nd"} 1\nx_total{kind="z"} 2.5\n'
        "# HELP g A gauge.\n# TYPE g gauge\ng 0\n")
    assert render_family("e", "gauge", "Empty.", []) == "# HELP e Empty.\n# TYPE e gauge\n"


def test_log_line_keys() -> None:
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    try:
        logging.getLogger("demo.part").info("event=started port=%d", 7)
        logging.getLogger("demo.part").debug("event=hidden")
    finally:
        logging.getLogger().handlers.clear()
    line = stream.getvalue()
    assert re.fullmatch(
        r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=INFO logger=demo\.part event=started port=7\n",
        line)
