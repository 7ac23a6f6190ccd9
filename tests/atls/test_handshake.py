"""aTLS handshakes between our own endpoints over loopback asyncio streams, all three directions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.atls import (
    AtlsError,
    ClientConfig,
    HandshakeError,
    HandshakeTimeoutError,
    NoMatchingValidatorsError,
    NoValidAttestationExtensionsError,
    ServerConfig,
    aio,
    wire,
)
from attestation.atls.certificate import key_spki_der
from tests.atls.fakes import FakeIssuer, FakeValidator


@contextlib.asynccontextmanager
async def serve(config: Callable[[], ServerConfig], results: list[object], limit_s: float = 5.0
                ) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            stream = await aio.accept(reader, writer, config(), limit_s)
        except AtlsError as exc:
            results.append(exc)
            return
        results.append(stream.peer)
        try:
            data = await stream.read()
            await stream.write(b"pong:" + data)
        except AtlsError as exc:
            results.append(exc)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await session(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def mutual_server() -> ServerConfig:
    return ServerConfig(issuer=FakeIssuer(), validators=[FakeValidator()])


async def roundtrip(port: int, config: ClientConfig) -> aio.AtlsStream:
    stream = await aio.connect("127.0.0.1", port, config, 5.0)
    try:
        await stream.write(b"ping")
        assert await stream.read() == b"pong:ping"
    finally:
        await stream.close()
    return stream


@pytest.mark.parametrize("tls13_only", [True, False])
async def test_server_attests(tls13_only: bool) -> None:
    results: list[object] = []
    async with serve(lambda: ServerConfig(issuer=FakeIssuer(host_data=b"\x22" * 32)), results) as port:
        stream = await roundtrip(port, ClientConfig(validators=[FakeValidator()], tls13_only=tls13_only))
    assert stream.peer is not None and stream.peer.verdict is not None
    assert stream.peer.verdict.host_data == b"\x22" * 32
    assert stream.peer.alpn == b"h2"
    assert stream.atls.version == ("TLSv1.3" if tls13_only else stream.atls.version)


async def test_client_attests_with_fixed_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    results: list[object] = []
    async with serve(mutual_server, results) as port:
        stream = await roundtrip(port, ClientConfig(issuer=FakeIssuer(host_data=b"\x33" * 32), key=key))
    peer = results[0]
    assert not isinstance(peer, Exception) and peer is not None
    assert peer.spki_der == key_spki_der(key)  # type: ignore[union-attr]
    assert peer.verdict.host_data == b"\x33" * 32  # type: ignore[union-attr]
    assert stream.peer is not None and stream.peer.verdict is None  # client had no validators


async def test_mutual() -> None:
    results: list[object] = []
    async with serve(mutual_server, results) as port:
        stream = await roundtrip(port, ClientConfig(issuer=FakeIssuer(), validators=[FakeValidator()]))
    assert stream.peer is not None and stream.peer.verdict is not None
    assert results[0].verdict is not None  # type: ignore[union-attr]


async def test_unattested_client_rejected_when_server_has_validators() -> None:
    results: list[object] = []
    async with serve(mutual_server, results) as port:
        # TLS 1.3: the client finishes first, then sees the server's alert or EOF instead of data.
        with pytest.raises((HandshakeError, AssertionError)):
            await roundtrip(port, ClientConfig())
    assert isinstance(results[0], NoValidAttestationExtensionsError)


async def test_wrong_measurement_names_field() -> None:
    results: list[object] = []
    async with serve(lambda: ServerConfig(issuer=FakeIssuer(measurement=b"X" * 16)), results) as port:
        with pytest.raises(NoMatchingValidatorsError, match=r"MEASUREMENT is (58)+, expected (4d)+"):
            await roundtrip(port, ClientConfig(validators=[FakeValidator()]))


async def test_replayed_evidence_rejected() -> None:
    # Evidence bound to another key/nonce: its report data cannot match this handshake.
    stale = FakeIssuer().issue(wire.report_data(b"other key", b"\0" * 32))
    results: list[object] = []
    async with serve(lambda: ServerConfig(issuer=FakeIssuer(replay=stale)), results) as port:
        with pytest.raises(NoMatchingValidatorsError, match="REPORT_DATA"):
            await roundtrip(port, ClientConfig(validators=[FakeValidator()]))


async def test_stalled_client_times_out_without_blocking_others() -> None:
    results: list[object] = []
    async with serve(lambda: ServerConfig(issuer=FakeIssuer()), results, limit_s=0.5) as port:
        _r, stalled = await asyncio.open_connection("127.0.0.1", port)
        stalled.write(b"\x16\x03\x01")  # a TLS record header, then silence
        await roundtrip(port, ClientConfig(validators=[FakeValidator()]))
        await asyncio.sleep(0.8)
        stalled.close()
        await stalled.wait_closed()
    assert any(isinstance(r, HandshakeTimeoutError) for r in results)


async def test_garbage_client_gets_clean_error() -> None:
    results: list[object] = []
    async with serve(lambda: ServerConfig(issuer=FakeIssuer()), results) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n" * 10)
        await reader.read()
        writer.close()
        await writer.wait_closed()
        await roundtrip(port, ClientConfig(validators=[FakeValidator()]))
    assert isinstance(results[0], HandshakeError)
