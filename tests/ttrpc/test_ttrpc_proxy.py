"""Client and proxy behaviour over real unix sockets."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from guest.ttrpc import (
    NEED_DATA,
    Address,
    Answer,
    Call,
    Client,
    Code,
    Connection,
    Forward,
    Proxy,
    Request,
    Response,
    Role,
    Server,
    Status,
    TtrpcError,
    encode_frame,
)
from guest.ttrpc.messages import decode_response, encode_request, encode_response

from .conftest import RawPeer, unix

SVC = "ttrpcecho.AgentService"


class RecordingUpstream:
    """A byte-level upstream: decodes what arrives with a fresh sans-IO connection, records the raw frame
    payloads, and answers each request with its own payload (or stays silent for method "Silent")."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, Request, bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def serve(self, sockdir: Path) -> tuple[asyncio.Server, Address]:
        addr = unix(sockdir, "up.sock")
        self.server = await asyncio.start_unix_server(self._handle, addr.path)
        return self.server, addr

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()
        await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        conn = Connection(Role.SERVER)
        while data := await reader.read(65536):
            raw = data
            conn.receive_data(data)
            while (ev := conn.next_event()) is not NEED_DATA:
                assert isinstance(ev, Call), ev
                self.requests.append((ev.stream_id, ev.request, raw))
                if ev.request.method == "Hangup":
                    writer.close()
                    return
                if ev.request.method != "Silent":
                    writer.write(conn.send_ok(ev.stream_id, ev.request.payload))
        writer.close()


async def with_proxy(
    sockdir: Path,
    interceptor: Callable[[Request], Awaitable[Forward | Answer]],
    upstream: Address | None = None,
) -> tuple[Proxy, Client, Server | None]:
    server = None
    if upstream is None:

        async def echo(req: Request) -> bytes:
            return req.payload

        async def slow(req: Request) -> bytes:
            await asyncio.sleep(float(req.payload))
            return b"slow"

        server = Server({(SVC, "Echo"): echo, (SVC, "Slow"): slow})
        upstream = await server.start(unix(sockdir, "agent.sock"))
    proxy = Proxy(upstream, interceptor)
    addr = await proxy.start(unix(sockdir, "proxy.sock"))
    return proxy, await Client().connect(addr), server


async def allow(req: Request) -> Forward | Answer:
    return Forward(req)


# -- client ------------------------------------------------------------------------------------------------
async def test_client_deadline_sends_timeout_nano_and_drops_late_reply(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)
    c = await Client().connect(addr)
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "Silent", b"", timeout=0.1)
    assert ei.value.status == Status(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
    assert 0 < rec.requests[0][1].timeout_nano <= 100_000_000
    assert await c.call(SVC, "Echo", b"still usable") == b"still usable"
    await c.close()
    await rec.stop()


async def test_client_survives_go_server_variants(sockdir: Path) -> None:
    """Oversize reply (Go 1.1 servers do send them), a reply with no status, an unknown frame type."""
    addr = unix(sockdir, "fake.sock")

    writers: list[asyncio.StreamWriter] = []

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        conn = Connection(Role.SERVER)
        while data := await reader.read(65536):
            conn.receive_data(data)
            while (ev := conn.next_event()) is not NEED_DATA:
                assert isinstance(ev, Call)
                sid, method = ev.stream_id, ev.request.method
                if method == "Big":
                    n = 4 * 1024 * 1024 + 1
                    writer.write(struct.pack(">IIBB", n, sid, 2, 0) + bytes(n))
                elif method == "NoStatus":
                    writer.write(encode_frame(sid, 9, 0, b"junk") + encode_frame(sid, 2, 0, b"\x12\x01z"))
                else:
                    writer.write(conn.send_ok(sid, b"ok"))

    server = await asyncio.start_unix_server(fake, addr.path)
    c = await Client().connect(addr)
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "Big", b"")
    assert ei.value.code == Code.RESOURCE_EXHAUSTED
    assert await c.call(SVC, "NoStatus", b"") == b"z"
    assert await c.call(SVC, "Other", b"") == b"ok"
    await c.close()
    server.close()
    for w in writers:
        w.transport.abort()
    await server.wait_closed()
    await asyncio.sleep(0)


async def test_client_refuses_oversize_request_locally(echo_server: tuple[Server, Address]) -> None:
    c = await Client().connect(echo_server[1])
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "Echo", bytes(4 * 1024 * 1024))
    assert ei.value.code == Code.RESOURCE_EXHAUSTED
    await c.close()


async def test_pending_calls_fail_when_server_goes_away(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)
    c = await Client().connect(addr)
    t = asyncio.create_task(c.call(SVC, "Silent", b""))
    await asyncio.sleep(0.05)
    with pytest.raises(TtrpcError) as ei:
        await asyncio.wait_for(c.call(SVC, "Hangup", b""), 5)
    assert ei.value.code == Code.UNAVAILABLE
    with pytest.raises(TtrpcError) as ei:
        await asyncio.wait_for(t, 5)
    assert ei.value.code == Code.UNAVAILABLE
    assert not c.connected
    await rec.stop()


# -- proxy -------------------------------------------------------------------------------------------------
async def test_upstream_receives_exactly_what_the_interceptor_passed_on(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)

    async def rewrite(req: Request) -> Forward | Answer:
        return Forward(
            Request(req.service, req.method, b"rewritten:" + req.payload, 7_000_000_000, (("p", "1"),))
        )

    proxy, c, _ = await with_proxy(sockdir, rewrite, addr)
    # The downstream request carries extra metadata and unknown protobuf fields the proxy must not pass on.
    down_envelope = encode_request(Request(SVC, "Echo", b"orig", 0, (("secret", "x"),))) + b"\x30\x01"
    raw = await RawPeer.open(Address("unix", path=str(sockdir / "proxy.sock")))
    await raw.send(encode_frame(1, 1, 0, down_envelope))
    _, sid, _, _, payload = await raw.read_frame()
    assert sid == 1 and decode_response(payload) == Response(Status(Code.OK), b"rewritten:orig")
    [(up_sid, got, wire)] = rec.requests
    expected = Request(SVC, "Echo", b"rewritten:orig", 7_000_000_000, (("p", "1"),))
    assert got == expected
    assert wire == encode_frame(up_sid, 1, 0, encode_request(expected))  # re-encoded, byte for byte
    await raw.close()
    await c.close()
    await proxy.close()
    await rec.stop()


async def test_answer_never_reaches_upstream_and_on_response_rewrites(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)

    async def redact(resp: Response) -> Response:
        return Response(resp.status, b"<redacted>")

    async def policy(req: Request) -> Forward | Answer:
        if req.method == "ExecProcess":
            return Answer(Response(Status(Code.PERMISSION_DENIED, "ExecProcessRequest is blocked by policy")))
        if req.method == "ReadStdout":
            await asyncio.sleep(0.01)  # a suspending interceptor takes the task path
            return Forward(req, on_response=redact)
        return Forward(req)

    proxy, c, _ = await with_proxy(sockdir, policy, addr)
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "ExecProcess", b"")
    assert ei.value.status == Status(Code.PERMISSION_DENIED, "ExecProcessRequest is blocked by policy")
    assert await c.call(SVC, "ReadStdout", b"password") == b"<redacted>"
    assert [r.method for _, r, _ in rec.requests] == ["ReadStdout"]
    await c.close()
    await proxy.close()
    await rec.stop()


@pytest.mark.parametrize("where", ["interceptor", "interceptor-after-await", "bad-return", "on_response"])
async def test_hook_failures_fail_closed_with_internal(sockdir: Path, where: str) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)

    async def broken_hook(resp: Response) -> Response:
        raise RuntimeError("hook bug")

    async def policy(req: Request) -> Forward | Answer:
        if where == "interceptor":
            raise RuntimeError("policy bug")
        if where == "interceptor-after-await":
            await asyncio.sleep(0)
            raise KeyError("policy bug")
        if where == "bad-return":
            return "allow"  # type: ignore[return-value]
        return Forward(req, on_response=broken_hook)

    proxy, c, _ = await with_proxy(sockdir, policy, addr)
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "Echo", b"secret")
    assert ei.value.code == Code.INTERNAL
    assert "bug" not in ei.value.status.message  # internals are logged, not sent
    assert len(rec.requests) == (1 if where == "on_response" else 0)
    await c.close()
    await proxy.close()
    await rec.stop()


async def test_proxy_answers_hostile_frames_itself(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)
    proxy, c, _ = await with_proxy(sockdir, allow, addr)
    raw = await RawPeer.open(Address("unix", path=str(sockdir / "proxy.sock")))
    n = 5 * 1024 * 1024
    await raw.send(struct.pack(">IIBB", n, 1, 1, 0) + bytes(n))
    await raw.send(encode_frame(3, 1, 0, b"\xff\xff\xff\xff"))
    await raw.send(encode_frame(4, 1, 0, encode_request(Request(SVC, "Echo", b""))))
    await raw.send(encode_frame(5, 3, 0, b"data"))
    got = {}
    for _ in range(4):
        _, sid, _, _, payload = await raw.read_frame()
        got[sid] = decode_response(payload).status
    assert got[1] == Status(
        Code.INVALID_ARGUMENT, f"message length {n} exceed maximum message size of 4194304"
    )
    assert got[3].code == Code.INVALID_ARGUMENT
    assert got[4] == Status(Code.INVALID_ARGUMENT, "stream id must be odd")
    assert got[5] == Status(Code.INVALID_ARGUMENT, "Stream is no longer active")
    assert rec.requests == []  # nothing hostile reached the upstream
    assert await c.call(SVC, "Echo", b"fine") == b"fine"
    await raw.close()
    await c.close()
    await proxy.close()
    await rec.stop()


async def test_proxy_deadline_and_concurrency(sockdir: Path) -> None:
    proxy, c, server = await with_proxy(sockdir, allow)
    slow = asyncio.create_task(c.request(Request(SVC, "Slow", b"10", timeout_nano=100_000_000)))
    results = await asyncio.gather(*(c.call(SVC, "Echo", str(i).encode()) for i in range(1000)))
    assert results == [str(i).encode() for i in range(1000)]
    resp = await asyncio.wait_for(slow, 5)
    assert resp.status.code == Code.DEADLINE_EXCEEDED
    await c.close()
    await proxy.close()
    assert server is not None
    await server.close()


async def test_one_upstream_connection_per_downstream_and_upstream_loss(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)
    proxy, c1, _ = await with_proxy(sockdir, allow, addr)
    c2 = await Client().connect(Address("unix", path=str(sockdir / "proxy.sock")))
    await c1.call(SVC, "Echo", b"")
    await c2.call(SVC, "Echo", b"")
    assert rec.connections == 2
    await c1.close()
    await c2.close()
    await proxy.close()
    await rec.stop()


async def test_upstream_unreachable_closes_downstream(sockdir: Path) -> None:
    proxy = Proxy(unix(sockdir, "nobody.sock"), allow)
    addr = await proxy.start(unix(sockdir, "proxy.sock"))
    c = await Client().connect(addr)
    with pytest.raises(TtrpcError) as ei:
        await asyncio.wait_for(c.call(SVC, "Echo", b""), 5)
    assert ei.value.code == Code.UNAVAILABLE
    await c.close()
    await proxy.close()


def test_ok_response_bytes() -> None:
    assert encode_response(Response(Status(Code.OK))) == b"\x0a\x00"


async def test_unencodable_values_fail_the_call_not_the_process(sockdir: Path) -> None:
    rec = RecordingUpstream()
    _, addr = await rec.serve(sockdir)

    async def surrogate(req: Request) -> Forward | Answer:
        if req.method == "BadAnswer":
            return Answer(Response(Status(Code.PERMISSION_DENIED, "bad \udc80 text")))
        return Forward(Request(req.service, "bad \udc80 method", req.payload))

    proxy, c, _ = await with_proxy(sockdir, surrogate, addr)
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "Echo", b"")
    assert ei.value.code == Code.INTERNAL
    with pytest.raises(TtrpcError) as ei:
        await c.call(SVC, "BadAnswer", b"")
    assert ei.value.status == Status(Code.UNKNOWN, "ttrpc: response could not be encoded")
    assert rec.requests == []
    await c.close()
    await proxy.close()
    await rec.stop()
