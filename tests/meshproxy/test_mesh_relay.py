"""The data path in-process, without root: an egress listener on loopback in front of a real TLS server.

Covers what the netns tests cannot time cheaply: large transfers with backpressure, TLS half-close, idle
and half-open deadlines, truncation turned into a reset, and the connection cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from meshproxy.certs import CredentialStore, load_credentials
from meshproxy.config import EgressEntry, ProxyConfig
from meshproxy.metrics import Metrics
from meshproxy.proxy import Limits, Proxy
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Harness:
    def __init__(self, proxy: Proxy, metrics: Metrics, listen: tuple[str, int]) -> None:
        self.proxy, self.metrics, self.listen = proxy, metrics, listen

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.listen)


@pytest.fixture
async def harness_factory(tls_dirs: dict[str, Path]) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    servers: list[asyncio.Server] = []
    proxies: list[Proxy] = []

    async def make(handler: Handler, limits: Limits | None = None) -> Harness:
        server_ctx = load_credentials(tls_dirs["b"]).server_mtls
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        servers.append(server)
        remote_port = server.sockets[0].getsockname()[1]
        listen = ("127.0.0.1", free_port())
        config = ProxyConfig(
            egress=(EgressEntry("svc", listen[0], listen[1], "127.0.0.1", remote_port),),
            ingress_disabled=True,
        )
        metrics = Metrics()
        proxy = Proxy(config, CredentialStore(tls_dirs["a"]), metrics, limits)
        proxy.start()
        proxies.append(proxy)
        return Harness(proxy, metrics, listen)

    yield make
    for proxy in proxies:
        await proxy.stop()
    for server in servers:
        server.close()


def _threaded_echo_server(ctx: ssl.SSLContext) -> tuple[socket.socket, threading.Thread]:
    """A blocking TLS echo server: asyncio's SSL transport cannot half-close, the stdlib SSLSocket can."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            digest = hashlib.sha256()
            total = 0
            while data := tls.recv(1 << 16):  # b"" = the client's close_notify
                digest.update(data)
                total += len(data)
                tls.sendall(data)
            tls.sendall(f"\n{total} {digest.hexdigest()}".encode())  # still allowed after the peer closed
            tls.unwrap()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


async def test_large_transfer_both_ways_with_half_close(tls_dirs: dict[str, Path]) -> None:
    listener, thread = _threaded_echo_server(load_credentials(tls_dirs["b"]).server_mtls)
    listen = ("127.0.0.1", free_port())
    metrics = Metrics()
    entry = EgressEntry("svc", *listen, "127.0.0.1", listener.getsockname()[1])
    proxy = Proxy(
        ProxyConfig(egress=(entry,), ingress_disabled=True), CredentialStore(tls_dirs["a"]), metrics
    )
    proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*listen)
        payload = os.urandom(8 << 20)

        async def send() -> None:
            for i in range(0, len(payload), 1 << 20):
                writer.write(payload[i : i + (1 << 20)])
                await writer.drain()
            writer.write_eof()  # half-close: becomes our close_notify, the server still answers

        sender = asyncio.create_task(send())
        received = await asyncio.wait_for(reader.read(-1), 60)
        await sender
        writer.close()
        echoed, trailer = received[: len(payload)], received[len(payload) :]
        assert echoed == payload
        assert trailer.decode() == f"\n{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        stats = metrics.listeners["svc"]
        assert stats.bytes.plain_to_tls == len(payload) and stats.bytes.tls_to_plain == len(received)
        assert await _eventually(lambda: stats.active == 0)
    finally:
        await proxy.stop()
        listener.close()
        await asyncio.to_thread(thread.join, 10)


async def _eventually(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(-1)
    await asyncio.sleep(30)


async def test_idle_connection_times_out(harness_factory: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness_factory(_silent, Limits(idle_timeout=0.4, sweep_interval=0.05))
    reader, writer = await h.connect()
    writer.write(b"hello")
    await writer.drain()
    t0 = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    assert 0.3 < asyncio.get_running_loop().time() - t0 < 3
    writer.close()


async def test_half_open_connection_times_out(harness_factory: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness_factory(_silent, Limits(idle_timeout=60, half_open_timeout=0.4, sweep_interval=0.05))
    reader, writer = await h.connect()
    writer.write(b"request")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    writer.close()
    assert await _eventually(lambda: h.metrics.listeners["svc"].active == 0)


async def _truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(5)
    writer.write(b"partial answer")
    await writer.drain()
    writer.transport.abort()  # TCP closes without a TLS close_notify


async def test_truncated_tls_stream_resets_the_application(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    h = await harness_factory(_truncate)
    reader, writer = await h.connect()
    writer.write(b"hello")
    await writer.drain()
    received = b""
    with pytest.raises(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(100), 5):
            received += chunk
    assert received in (b"", b"partial answer")
    writer.close()


async def test_connection_cap_pauses_accept(harness_factory: Callable[..., Awaitable[Harness]]) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    h = await harness_factory(hold, Limits(max_connections=2))
    first = [await h.connect() for _ in range(2)]
    for reader, writer in first:
        writer.write(b"x")
        assert await asyncio.wait_for(reader.read(1), 5) == b"x"
    third_reader, third_writer = await h.connect()  # queued in the backlog, not served
    third_writer.write(b"y")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(third_reader.read(1), 0.5)
    first[0][1].close()
    assert await asyncio.wait_for(third_reader.read(1), 5) == b"y"
    for _, writer in (first[1], (third_reader, third_writer)):
        writer.close()


async def test_server_from_another_mesh_is_refused(tls_dirs: dict[str, Path]) -> None:
    server_ctx = load_credentials(tls_dirs["foreign"]).server_tls
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    listen = ("127.0.0.1", free_port())
    metrics = Metrics()
    proxy = Proxy(
        ProxyConfig(egress=(EgressEntry("svc", *listen, "127.0.0.1", port),), ingress_disabled=True),
        CredentialStore(tls_dirs["a"]),
        metrics,
    )
    proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*listen)
        writer.write(b"secret")
        with contextlib.suppress(ConnectionResetError):  # unread input makes the close a reset
            assert await asyncio.wait_for(reader.read(-1), 5) == b""
        writer.close()
        assert metrics.listeners["svc"].handshake_failures["certificate_verify_failed"] == 1
        assert b"secret" not in b"".join(seen)
    finally:
        await proxy.stop()
        server.close()


def test_tls_context_minimum_version(tls_dirs: dict[str, Path]) -> None:
    creds = load_credentials(tls_dirs["a"])
    for ctx in (creds.server_mtls, creds.server_tls, creds.client):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (
        creds.server_mtls.verify_mode == ssl.CERT_REQUIRED and creds.client.verify_mode == ssl.CERT_REQUIRED
    )
