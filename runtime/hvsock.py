"""Host end of the hybrid-vsock bridge: Kata's ``CONNECT <port>\\n`` / ``OK <port>\\n`` unix socket.

Kata's runtime reaches the agent of a Firecracker or Cloud Hypervisor VM through a unix socket:
it connects, writes ``CONNECT <vsock port>\\n`` and, after ``OK <port>\\n``, talks ttrpc on the
same connection. This bridge offers exactly that socket and carries each connection as a stream
over one virtio-serial port to the in-guest relay (``image.build.inside.relay``), which connects
to the agent's real AF_VSOCK listener. A refused or malformed CONNECT closes the connection
without a reply, as the VMMs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from pathlib import Path

from image.build.inside.mux import MAX_PAYLOAD, Frame, FrameDecoder, Kind, encode

__all__ = ["BridgeThread", "HybridVsockBridge", "connect", "open_agent_connection"]

_CONNECT = re.compile(rb"CONNECT (\d{1,10})\n")


class HybridVsockBridge:
    def __init__(self, port_socket: Path, listen_path: Path) -> None:
        self.port_socket = port_socket
        self.listen_path = listen_path
        self._writer: asyncio.StreamWriter | None = None
        self._next = 1
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._clients: dict[int, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, connect_within: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_within
        while True:
            try:
                reader, self._writer = await asyncio.open_unix_connection(str(self.port_socket))
                break
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        task = asyncio.create_task(self._pump_port(reader))
        self._tasks.add(task)
        self._server = await asyncio.start_unix_server(self._client, path=str(self.listen_path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._clients.values():
            w.close()
        if self._writer is not None:
            self._writer.close()
        for t in self._tasks:
            t.cancel()
        # Let the transports' connection_lost run (it closes the sockets) before the loop stops.
        for _ in range(3):
            await asyncio.sleep(0)

    def _send(self, frame: Frame) -> None:
        assert self._writer is not None
        self._writer.write(encode(frame))

    async def _pump_port(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for frame in decoder.receive_data(data):
                fut = self._pending.pop(frame.stream, None)
                if frame.kind in (Kind.OPENED, Kind.REFUSED) and fut is not None:
                    fut.set_result(frame.kind is Kind.OPENED)
                elif frame.kind is Kind.DATA and frame.stream in self._clients:
                    self._clients[frame.stream].write(frame.payload)
                elif frame.kind is Kind.CLOSE and frame.stream in self._clients:
                    w = self._clients.pop(frame.stream)
                    with contextlib.suppress(OSError):
                        w.write_eof()
                    w.close()
        for fut in self._pending.values():
            fut.set_result(False)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        m = _CONNECT.fullmatch(line)
        if m is None or int(m.group(1)) >= 2**32 or self._writer is None:
            writer.close()
            return
        port = int(m.group(1))
        stream = self._next
        self._next += 1
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[stream] = fut
        self._send(Frame(Kind.OPEN, stream, port.to_bytes(4, "big")))
        if not await fut:
            writer.close()
            return
        self._clients[stream] = writer
        writer.write(b"OK %d\n" % port)
        try:
            while data := await reader.read(MAX_PAYLOAD):
                self._send(Frame(Kind.DATA, stream, data))
        except OSError:
            pass
        if self._writer is not None and not self._writer.is_closing():
            self._send(Frame(Kind.CLOSE, stream))


class BridgeThread:
    """Runs a bridge on its own event loop in a daemon thread (for synchronous tests and tools)."""

    def __init__(self, port_socket: Path, listen_path: Path) -> None:
        self.bridge = HybridVsockBridge(port_socket, listen_path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hvsock-bridge", daemon=True)

    def start(self, timeout: float = 30.0) -> BridgeThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.bridge.start(timeout), self._loop).result(timeout + 5)
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.bridge.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> BridgeThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(path: Path, port: int, timeout: float = 10.0) -> socket.socket:
    """Connect to ``port`` through a hybrid-vsock socket the way Kata's runtime does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(b"CONNECT %d\n" % port)
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionRefusedError(f"hybrid vsock: port {port} refused")
            line += chunk
            if len(line) > 32:
                raise ConnectionError(f"hybrid vsock: bad reply {line!r}")
        if not line.startswith(b"OK "):
            raise ConnectionError(f"hybrid vsock: bad reply {line!r}")
    except BaseException:
        sock.close()
        raise
    return sock


async def open_agent_connection(path: Path, port: int, timeout: float) -> socket.socket:  # noqa: ASYNC109
    """Dial ``port`` through the hybrid-vsock socket, retrying until ``timeout`` like Kata's dialer
    (a VM that is still booting refuses); the returned socket is non-blocking."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, str(path))
            await loop.sock_sendall(sock, b"CONNECT %d\n" % port)
            line = b""
            async with asyncio.timeout(min(10.0, max(deadline - loop.time(), 0.1))):
                while not line.endswith(b"\n") and len(line) <= 32:
                    chunk = await loop.sock_recv(sock, 1)
                    if not chunk:
                        raise ConnectionRefusedError(f"hybrid vsock: port {port} refused")
                    line += chunk
            if not line.startswith(b"OK "):
                raise ConnectionError(f"hybrid vsock: bad reply {line[:40]!r}")
            return sock
        except (OSError, TimeoutError) as e:
            sock.close()
            last = e
            await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out connecting to hvsock://{path}:{port} after {timeout:.0f}s: {last}")
