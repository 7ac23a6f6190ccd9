"""gRPC (grpcio) over aTLS: a server-side terminator and a client-side forwarder.

grpcio cannot run over a custom TLS socket (no fd adoption, no handshaker plug-in), so aTLS is
terminated in-process and the plaintext HTTP/2 stream is piped to/from grpcio:

* Server: `Terminator` accepts TCP, runs the aTLS handshake, then connects to the grpcio backend on
  127.0.0.1 and records ``registry[local source port] = Peer`` *before forwarding any byte*. Handlers
  look the caller up by the port in ``context.peer()``. A connection that did not come through the
  terminator has no entry and is refused (`PeerRegistry.lookup` raises), so the local hop is not an
  unauthenticated path: a TCP 4-tuple is unique, and no other socket can hold our source port while
  our connection is open. The entry is removed before our socket closes.
* Client: `Forwarder` listens on a Unix socket in a private 0700 directory, accepts only connections
  from this very process (SO_PEERCRED pid check), and runs a fresh aTLS client handshake per accepted
  connection. grpcio dials ``unix:<path>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from attestation.atls import aio
from attestation.atls.attest import Peer
from attestation.atls.connection import AtlsConnection, ClientConfig, ServerConfig
from attestation.atls.errors import AtlsError

log = logging.getLogger("atls.tunnel")
_READ = 65536
T = TypeVar("T")


class UnknownPeerError(AtlsError):
    """A backend connection that did not come through the aTLS terminator."""


class PeerRegistry:
    """Loopback source port -> verified peer, filled by the terminator, read by gRPC handlers."""

    def __init__(self) -> None:
        self._peers: dict[int, Peer] = {}
        self._lock = threading.Lock()

    def register(self, port: int, peer: Peer) -> None:
        with self._lock:
            self._peers[port] = peer

    def remove(self, port: int) -> None:
        with self._lock:
            self._peers.pop(port, None)

    def lookup(self, grpc_peer: str) -> Peer:
        """The peer for grpcio's ``context.peer()`` string, e.g. ``ipv4:127.0.0.1:40522``."""
        if not grpc_peer.startswith(("ipv4:127.0.0.1:", "ipv6:[::1]:")):
            raise UnknownPeerError(f"gRPC peer {grpc_peer!r} is not a loopback connection")
        try:
            port = int(grpc_peer.rsplit(":", 1)[1])
        except ValueError as exc:
            raise UnknownPeerError(f"gRPC peer {grpc_peer!r} has no port") from exc
        with self._lock:
            peer = self._peers.get(port)
        if peer is None:
            raise UnknownPeerError(f"no aTLS handshake recorded for loopback port {port}")
        return peer

    def __len__(self) -> int:
        with self._lock:
            return len(self._peers)


async def _pump_plain_to_tls(plain: asyncio.StreamReader, tls: aio.AtlsStream) -> None:
    while True:
        data = await plain.read(_READ)
        if not data:
            return
        await tls.write(data)


async def _pump_tls_to_plain(
    tls: aio.AtlsStream, plain: asyncio.StreamWriter, on_error: Callable[[AtlsError], None] | None = None
) -> None:
    while True:
        try:
            data = await tls.read()
        except AtlsError as exc:
            if on_error is not None:
                on_error(exc)  # before the plain side closes, so the caller can report it
            raise
        if not data:
            return
        plain.write(data)
        await plain.drain()


async def _splice(
    tls: aio.AtlsStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    on_error: Callable[[AtlsError], None] | None = None,
) -> BaseException | None:
    """Pipe both ways until one side ends; return the TLS-side error, if any (e.g. a peer alert)."""
    to_tls = asyncio.ensure_future(_pump_plain_to_tls(reader, tls))
    from_tls = asyncio.ensure_future(_pump_tls_to_plain(tls, writer, on_error))
    tasks = [to_tls, from_tls]
    error: BaseException | None = None
    try:
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, ConnectionError, OSError):
                pass
            except AtlsError as exc:
                error = error or exc
    finally:
        await tls.close()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return error


class Terminator:
    """aTLS listener in front of a grpcio server bound to 127.0.0.1:`backend_port`."""

    def __init__(
        self,
        host: str,
        port: int,
        backend_port: int,
        config: Callable[[], ServerConfig],
        registry: PeerRegistry,
        handshake_timeout: float = aio.SERVER_HANDSHAKE_TIMEOUT,
        on_failure: Callable[[Exception], None] | None = None,
        name: str = "atls",
    ) -> None:
        self.host, self.port, self.backend_port = host, port, backend_port
        self._config = config
        self._registry = registry
        self._timeout = handshake_timeout
        self._on_failure = on_failure
        self._server: asyncio.Server | None = None
        self.name = name

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=512)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = writer.get_extra_info("peername")
        try:
            tls = await aio.handshake(AtlsConnection.server(self._config()), reader, writer, self._timeout)
        except (AtlsError, OSError) as exc:
            log.warning("event=handshake_failed listener=%s remote=%s error=%r", self.name, remote, str(exc))
            if self._on_failure is not None:
                self._on_failure(exc)
            writer.close()
            return
        peer = tls.peer
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError as exc:
            log.error("event=backend_unreachable listener=%s error=%r", self.name, str(exc))
            await tls.close()
            return
        aio._nodelay(b_writer)
        local_port = b_writer.get_extra_info("sockname")[1]
        if peer is not None:
            self._registry.register(local_port, peer)
        try:
            await _splice(tls, b_reader, b_writer)
        except asyncio.CancelledError:
            pass  # server shutdown
        finally:
            self._registry.remove(local_port)


class _LoopThread:
    """One background event loop shared by all forwarders of this process."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="atls-forwarder", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class Forwarder:
    """Local Unix-socket endpoint for grpcio that forwards over a fresh aTLS client connection."""

    def __init__(
        self, host: str, port: int, config: ClientConfig, timeout: float = aio.CLIENT_CONNECT_TIMEOUT
    ) -> None:
        self.host, self.port, self._config, self._timeout = host, port, config, timeout
        self._dir = tempfile.mkdtemp(prefix="atls-")
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "grpc.sock")
        self.last_error: Exception | None = None
        self.last_peer: Peer | None = None
        self._lt = _LoopThread.get()
        self._server: asyncio.AbstractServer | None = self._lt.run(self._start())

    @property
    def target(self) -> str:
        return "unix:" + self.path

    async def _start(self) -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(self._handle, path=self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", creds)
        if pid != os.getpid():
            log.warning("event=forwarder_refused pid=%d", pid)
            writer.close()
            return
        try:
            tls = await aio.connect(self.host, self.port, self._config, self._timeout)
        except (AtlsError, OSError) as exc:
            self.last_error = exc
            log.warning("event=atls_dial_failed target=%s:%d error=%r", self.host, self.port, str(exc))
            writer.close()
            return
        self.last_error = None
        self.last_peer = tls.peer
        # TLS 1.3: a refused client certificate shows up as an alert after the handshake.
        await _splice(tls, reader, writer, on_error=self._record)

    def _record(self, error: AtlsError) -> None:
        self.last_error = error

    def close(self) -> None:
        if self._server is not None:
            server = self._server
            self._server = None

            async def stop() -> None:
                server.close()

            with contextlib.suppress(Exception):
                self._lt.run(stop(), 5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
