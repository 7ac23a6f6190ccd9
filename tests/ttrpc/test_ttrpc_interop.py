"""Interop with the real Go implementation (containerd/ttrpc 1.1.1 from Debian, built offline)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from guest.ttrpc import (
    Address,
    Client,
    Code,
    Forward,
    Proxy,
    Request,
    Server,
    Status,
    TtrpcError,
    encode_frame,
)
from guest.ttrpc.messages import decode_response
from tools.gottrpc import GoPeers
from tools.gottrpc.echo import METHOD, SERVICE, EchoService, parse_response, request_bytes

from .conftest import RawPeer, unix

pytestmark = pytest.mark.interop


async def go_client(peers: GoPeers, addr: Address, *args: str) -> Any:
    p = await asyncio.create_subprocess_exec(
        str(peers.client),
        "-sock",
        addr.path,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.fixture
async def go_server(go_peers: GoPeers, sockdir: Path) -> AsyncIterator[Address]:
    addr = unix(sockdir, "go.sock")
    p = await asyncio.create_subprocess_exec(
        str(go_peers.server),
        "-sock",
        addr.path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert p.stdout is not None
    assert (await asyncio.wait_for(p.stdout.readline(), 10)) == b"ready\n"
    yield addr
    p.kill()
    await p.wait()


@pytest.fixture
async def our_server(sockdir: Path) -> AsyncIterator[Address]:
    server = Server(EchoService().handlers())
    addr = await server.start(unix(sockdir, "py.sock"))
    yield addr
    await server.close()


# -- Go client → our server --------------------------------------------------------------------------------
async def test_go_client_to_our_server(go_peers: GoPeers, our_server: Address) -> None:
    r = await go_client(
        go_peers, our_server, "-id", "c1", "-data", "hello", "-md", "a=1,b=2", "-timeout", "3s"
    )
    assert (r["id"], r["data"], r["metadata"]) == ("c1", "hello", ["a=1", "b=2"])
    assert 2000 < r["timeout_ms"] <= 3000  # the Go client's deadline arrived as timeout_nano
    r = await go_client(go_peers, our_server, "-id", "error:denied by policy")
    assert (r["code"], r["message"]) == (Code.PERMISSION_DENIED, "denied by policy")
    # A reply over 4 MiB is replaced by ttrpc-rust's error, which the Go client receives as a status.
    r = await go_client(go_peers, our_server, "-reply-size", str(5 * 1024 * 1024))
    assert r["code"] == Code.INVALID_ARGUMENT
    assert r["message"].startswith("message length ") and r["message"].endswith("of 4194304")


async def test_go_client_concurrent_calls_on_one_connection(go_peers: GoPeers, our_server: Address) -> None:
    r = await go_client(go_peers, our_server, "-mode", "stress", "-n", "1000")
    assert r == {"ok": 900, "deadlines": 100, "bad": []}


# -- our client → Go server --------------------------------------------------------------------------------
async def test_our_client_to_go_server(go_server: Address) -> None:
    c = await Client().connect(go_server)
    resp = parse_response(
        await c.call(SERVICE, METHOD, request_bytes("c1", b"hello"), timeout=5, metadata=[("k", "v")])
    )
    assert (resp.id, resp.data, list(resp.metadata)) == ("c1", b"hello", ["k=v"])
    assert 4000 < resp.timeout_ms <= 5000
    with pytest.raises(TtrpcError) as ei:
        await c.call(SERVICE, METHOD, request_bytes("error:nope"))
    assert ei.value.status == Status(Code.PERMISSION_DENIED, "nope")
    # Go's variants of the error replies pass through unchanged.
    with pytest.raises(TtrpcError) as ei:
        await c.call(SERVICE, "Missing", b"")
    assert ei.value.code == Code.UNIMPLEMENTED
    with pytest.raises(TtrpcError) as ei:
        await c.call("x.Nope", METHOD, b"")
    assert ei.value.code == Code.UNIMPLEMENTED
    # ttrpc 1.1.1 sends a reply over 4 MiB; our client fails that call only, as Go's client does.
    with pytest.raises(TtrpcError) as ei:
        await c.call(SERVICE, METHOD, request_bytes("big", reply_size=5 * 1024 * 1024))
    assert ei.value.code == Code.RESOURCE_EXHAUSTED
    # Client-side deadline while the server sleeps.
    with pytest.raises(TtrpcError) as ei:
        await c.call(SERVICE, METHOD, request_bytes("slow", sleep_ms=5000), timeout=0.2)
    assert ei.value.code == Code.DEADLINE_EXCEEDED
    results = await asyncio.gather(*(c.call(SERVICE, METHOD, request_bytes(f"m{i}")) for i in range(1000)))
    assert [parse_response(r).id for r in results] == [f"m{i}" for i in range(1000)]
    await c.close()


async def test_go_server_answers_even_stream_id_its_way(go_server: Address) -> None:
    raw = await RawPeer.open(go_server)
    from guest.ttrpc.messages import encode_request

    await raw.send(encode_frame(2, 1, 0, encode_request(Request(SERVICE, METHOD, request_bytes("x")))))
    _, sid, _, _, payload = await raw.read_frame()
    assert sid == 2 and decode_response(payload).status.code == Code.INVALID_ARGUMENT
    await raw.close()


# -- Go client → our proxy → Go server ---------------------------------------------------------------------
async def test_go_client_through_proxy_to_go_server(
    go_peers: GoPeers, go_server: Address, sockdir: Path
) -> None:
    seen: list[Request] = []

    async def interceptor(req: Request) -> Forward:
        # Drop the caller's metadata except "a", add our own: the Go server reports what it received.
        md = (*(kv for kv in req.metadata if kv[0] == "a"), ("via", "proxy"))
        fwd = Request(req.service, req.method, req.payload, req.timeout_nano, md)
        seen.append(fwd)
        return Forward(fwd)

    proxy = Proxy(go_server, interceptor)
    addr = await proxy.start(unix(sockdir, "proxy.sock"))
    r = await go_client(go_peers, addr, "-id", "c1", "-md", "a=1,secret=2", "-timeout", "3s")
    assert (r["id"], r["data"], r["metadata"]) == ("c1", "hello", ["a=1", "via=proxy"])
    assert 2000 < r["timeout_ms"] <= 3000
    r = await go_client(go_peers, addr, "-id", "error:denied upstream")
    assert (r["code"], r["message"]) == (Code.PERMISSION_DENIED, "denied upstream")

    # 1000 concurrent calls (every 10th with a deadline shorter than the server's sleep) while hostile peers
    # send oversize and garbage frames and leave a frame half-sent on other connections of the same proxy.
    hostile = [await RawPeer.open(addr) for _ in range(3)]
    n = 5 * 1024 * 1024
    await hostile[0].send(struct.pack(">IIBB", n, 1, 1, 0) + bytes(n))
    await hostile[1].send(encode_frame(1, 1, 0, b"\xff" * 64) + encode_frame(3, 3, 1, b"x"))
    await hostile[2].send(encode_frame(1, 1, 0, b"\x0a\x05abc")[:8])
    stress = await go_client(go_peers, addr, "-mode", "stress", "-n", "1000")
    assert stress == {"ok": 900, "deadlines": 100, "bad": []}
    _, sid, _, _, payload = await hostile[0].read_frame()
    assert (sid, decode_response(payload).status) == (
        1,
        Status(Code.INVALID_ARGUMENT, f"message length {n} exceed maximum message size of 4194304"),
    )
    replies = {}
    for _ in range(2):
        _, sid, _, _, payload = await hostile[1].read_frame()
        replies[sid] = decode_response(payload).status
    assert replies[1].code == Code.INVALID_ARGUMENT
    assert replies[3] == Status(Code.INVALID_ARGUMENT, "Stream id 3: data close message connot include data")
    assert len(seen) == 2 + 1000  # garbage never reached the interceptor, let alone the upstream
    for p in hostile:
        p.writer.transport.abort()
    await proxy.close()
