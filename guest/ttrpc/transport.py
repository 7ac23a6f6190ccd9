"""Opening listeners and connections for the three address kinds (unix, vsock, tcp) in asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Callable, Collection
from typing import TypeVar

from .address import Address

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def _unlink_stale_socket(path: str) -> None:
    # A socket file left by a previous run would make bind fail; only ever remove sockets.
    if path.startswith("\0"):
        return
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


async def listen(factory: ProtocolFactory, address: Address, backlog: int = 1024) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    if address.scheme == "unix":
        _unlink_stale_socket(address.path)
        return await loop.create_unix_server(factory, address.path, backlog=backlog)
    if address.scheme == "tcp":
        return await loop.create_server(
            factory, address.host, address.port, backlog=backlog, reuse_address=True
        )
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.bind((address.cid, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return await loop.create_server(factory, sock=sock)


async def connect(
    factory: ProtocolFactory, address: Address
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    loop = asyncio.get_running_loop()
    if address.scheme == "unix":
        return await loop.create_unix_connection(factory, address.path)
    if address.scheme == "tcp":
        return await loop.create_connection(factory, address.host, address.port)
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (address.cid, address.port))
    except BaseException:
        sock.close()
        raise
    return await loop.create_connection(factory, sock=sock)


def listening_address(server: asyncio.Server, requested: Address) -> Address:
    """The bound address (resolves tcp port 0 / vsock port -1 to what the kernel picked)."""
    if requested.scheme == "unix" or not server.sockets:
        return requested
    name = server.sockets[0].getsockname()
    if requested.scheme == "tcp":
        return Address("tcp", host=requested.host, port=int(name[1]))
    return Address("vsock", cid=requested.cid, port=int(name[1]))


_Conn = TypeVar("_Conn")


async def shut_down(
    listeners: list[asyncio.Server], connections: Collection[_Conn], abort: Callable[[_Conn], None]
) -> None:
    """Stop listening, abort every connection, and wait for the listeners to close."""
    for listener in listeners:
        listener.close()
    for c in list(connections):
        abort(c)
    for listener in listeners:
        await listener.wait_closed()
    listeners.clear()
    # connection_lost runs from the loop: give it the turns it needs so nothing outlives the close.
    for _ in range(10):
        if not connections:
            break
        await asyncio.sleep(0)
