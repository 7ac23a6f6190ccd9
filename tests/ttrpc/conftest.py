"""Fixtures for the ttrpc tests: short socket directories, raw-socket peers, Go peers."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from guest.ttrpc import Address, Server, parse_address
from tools.gottrpc import GoPeers, GoUnavailableError, build
from tools.gottrpc.echo import EchoService


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="ttrpc-t-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def unix(d: Path, name: str) -> Address:
    return parse_address(f"unix://{d / name}")


@pytest.fixture
async def echo_server(sockdir: Path) -> AsyncIterator[tuple[Server, Address]]:
    server = Server(EchoService().handlers())
    addr = await server.start(unix(sockdir, "echo.sock"))
    yield server, addr
    await server.close()


class RawPeer:
    """A raw byte-level peer for sending hostile frames and reading replies frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: Address) -> RawPeer:
        r, w = await asyncio.open_unix_connection(address.path)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, wait: float = 5.0) -> tuple[int, int, int, int, bytes]:
        """(length, stream_id, type, flags, payload)."""
        from guest.ttrpc.frames import HEADER

        head = await asyncio.wait_for(self.reader.readexactly(10), wait)
        length, sid, typ, flags = HEADER.unpack(head)
        payload = await asyncio.wait_for(self.reader.readexactly(length), wait)
        return length, sid, typ, flags, payload

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture(scope="session")
def go_peers() -> GoPeers:
    if shutil.which("go") is None:
        pytest.skip(
            "`go` is not installed (apt-get install golang-go golang-github-containerd-ttrpc-dev gogottrpc)"
        )
    try:
        return build()
    except GoUnavailableError as e:
        # go is present, so a missing piece is a broken setup, not a reason to skip
        pytest.fail(str(e))
