"""asyncio adapter: moves bytes between asyncio streams and a sans-IO `AtlsConnection`."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from attestation.atls.attest import Peer
from attestation.atls.connection import AtlsConnection, ClientConfig, ServerConfig
from attestation.atls.errors import HandshakeError, HandshakeTimeoutError

# Contrast: the server gives a handshake 25 s, a client's connect 30 s.
SERVER_HANDSHAKE_TIMEOUT = 25.0
CLIENT_CONNECT_TIMEOUT = 30.0
_READ = 65536


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AtlsStream:
    """An established aTLS connection over asyncio streams."""

    def __init__(
        self, atls: AtlsConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.atls = atls
        self._reader = reader
        self._writer = writer

    @property
    def peer(self) -> Peer | None:
        return self.atls.peer

    async def read(self) -> bytes:
        """Next decrypted bytes; b"" at end of stream."""
        while True:
            plain = self.atls.read()
            await self._flush()
            if plain is not None:
                return plain
            data = await self._reader.read(_READ)
            self.atls.receive_data(data)
            if not data:
                plain = self.atls.read()
                return plain or b""

    async def write(self, data: bytes) -> None:
        self.atls.write(data)
        await self._flush()

    async def _flush(self) -> None:
        out = self.atls.data_to_send()
        if out:
            self._writer.write(out)
            await self._writer.drain()

    async def close(self) -> None:
        try:
            self.atls.close()
            await self._flush()
        except (ConnectionError, HandshakeError):
            pass
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def _drive(atls: AtlsConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            done = atls.advance_handshake()
        except BaseException:
            # Send the alert OpenSSL queued, so the peer learns why (e.g. "unknown ca").
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(atls.data_to_send())
                await writer.drain()
            raise
        out = atls.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()
        if done:
            return
        data = await reader.read(_READ)
        if not data:
            raise HandshakeError("peer closed the connection during the handshake")
        atls.receive_data(data)


async def handshake(
    atls: AtlsConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit_s: float
) -> AtlsStream:
    _nodelay(writer)
    try:
        await asyncio.wait_for(_drive(atls, reader, writer), limit_s)
    except TimeoutError as exc:
        raise HandshakeTimeoutError(f"handshake not finished within {limit_s:g} s") from exc
    except ConnectionError as exc:
        raise HandshakeError(f"connection lost during the handshake: {exc}") from exc
    return AtlsStream(atls, reader, writer)


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    config: ServerConfig,
    limit_s: float = SERVER_HANDSHAKE_TIMEOUT,
) -> AtlsStream:
    return await handshake(AtlsConnection.server(config), reader, writer, limit_s)


async def connect(
    host: str, port: int, config: ClientConfig, limit_s: float = CLIENT_CONNECT_TIMEOUT
) -> AtlsStream:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit_s)
    try:
        return await handshake(AtlsConnection.client(config), reader, writer, limit_s)
    except BaseException:
        writer.close()
        raise
