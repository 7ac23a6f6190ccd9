"""Properties: manifest checks and the HTTP request parser never fail with anything but our own errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.http import HttpError, parse_head
from coordinator import manifest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=70),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=70), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(json_values)
def test_manifest_check_total(doc: Any) -> None:
    problems = manifest.check(doc)
    assert all(isinstance(p, manifest.Problem) for p in problems)


@settings(max_examples=200)
@given(st.fixed_dictionaries({
    "Policies": st.dictionaries(st.text(max_size=70), json_values, max_size=3),
    "ReferenceValues": st.fixed_dictionaries({"snp": st.lists(json_values, max_size=2)}),
    "WorkloadOwnerKeyDigests": st.lists(st.text(max_size=70), max_size=2),
    "SeedshareOwnerPubKeys": st.lists(st.text(max_size=40), max_size=2),
}))
def test_manifest_parse_total(doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    try:
        parsed = manifest.parse(raw)
    except manifest.ManifestInvalidError as exc:
        assert exc.problems
        return
    assert parsed.raw == raw


@given(st.binary(max_size=300))
def test_http_head_parser_total(head: bytes) -> None:
    try:
        method, path, headers = parse_head(head)
    except HttpError as exc:
        assert exc.status == 400
        return
    assert isinstance(method, str) and isinstance(path, str) and isinstance(headers, dict)


def test_http_server_limits() -> None:
    from common.http import HttpServer, Request, Response, Route

    async def echo(req: Request) -> Response:
        return Response(200, req.body)

    async def main() -> list[bytes]:
        server = HttpServer("127.0.0.1", 0, {"/e": Route("POST", echo, 16)}, "t")
        await server.start()
        out = []
        for raw in (b"POST /e HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                    b"POST /e HTTP/1.1\r\nContent-Length: 17\r\n\r\n" + b"x" * 17,
                    b"GET /e HTTP/1.1\r\n\r\n", b"POST /nope HTTP/1.1\r\n\r\n",
                    b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"garbage\r\n\r\n",
                    b"POST /e HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(raw)
            out.append((await reader.read()).split(b"\r\n", 1)[0])
            writer.close()
            await writer.wait_closed()
        await server.close()
        return out

    assert asyncio.run(main()) == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 413 Payload Too Large", b"HTTP/1.1 405 Method Not Allowed",
        b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 400 Bad Request",
    ]
