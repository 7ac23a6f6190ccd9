"""In-guest end of the hybrid-vsock bridge: mux frames on a virtio-serial port ↔ AF_VSOCK.

There is no vhost-vsock on the hosts this project is tested on, so the host reaches the agent's
vsock port the way Kata's hybrid vsock does, through a unix socket; the bytes travel over one
virtio-serial port (``cg.hvsock``) and this relay connects each stream to ``vsock:1:<port>``
(loopback transport), so the agent itself listens on real AF_VSOCK.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from pathlib import Path

from .mux import Frame, FrameDecoder, Kind, encode

__all__ = ["HVSOCK_PORT_NAME", "Relay", "find_port"]

HVSOCK_PORT_NAME = "cg.hvsock"
VMADDR_CID_LOCAL = 1
_READ = 64 * 1024


def find_port(name: str, sysfs: Path = Path("/sys/class/virtio-ports")) -> Path | None:
    """The /dev node of the virtio-serial port called ``name`` (there is no udev in the guest)."""
    if not sysfs.is_dir():
        return None
    for entry in sorted(sysfs.iterdir()):
        try:
            if (entry / "name").read_text().strip() == name:
                return Path("/dev") / entry.name
        except OSError:
            continue
    return None


class Relay:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._streams: dict[int, socket.socket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    def start(self) -> None:
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)

    def _send(self, frame: Frame) -> None:
        self._out += encode(frame)
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._fd, self._out)
            except BlockingIOError:
                n = 0
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.ENODEV, errno.EPIPE):
                    n = 0
                else:
                    raise
            if n == 0:
                self._loop.add_writer(self._fd, self._on_writable)
                return
            del self._out[:n]

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._fd)
        self._flush()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ)
        except BlockingIOError:
            return
        if not data:
            return  # host side not connected; virtio-serial reports it as EOF, keep waiting
        for frame in self._decoder.receive_data(data):
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        if frame.kind is Kind.OPEN and len(frame.payload) == 4:
            task = self._loop.create_task(self._open(frame.stream, int.from_bytes(frame.payload, "big")))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif frame.kind is Kind.DATA and frame.stream in self._streams:
            sock = self._streams[frame.stream]
            task = self._loop.create_task(self._write(frame.stream, sock, frame.payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif frame.kind is Kind.CLOSE and frame.stream in self._streams:
                with contextlib.suppress(OSError):
                    self._streams[frame.stream].shutdown(socket.SHUT_WR)

    async def _write(self, stream: int, sock: socket.socket, data: bytes) -> None:
        try:
            await self._loop.sock_sendall(sock, data)
        except OSError:
            self._close(stream, sock)

    def _close(self, stream: int, sock: socket.socket) -> None:
        if self._streams.get(stream) is sock:
            del self._streams[stream]
        sock.close()
        self._send(Frame(Kind.CLOSE, stream))

    async def _open(self, stream: int, port: int) -> None:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await self._loop.sock_connect(sock, (VMADDR_CID_LOCAL, port))
        except OSError:
            sock.close()
            self._send(Frame(Kind.REFUSED, stream))
            return
        self._streams[stream] = sock
        self._send(Frame(Kind.OPENED, stream))
        try:
            while True:
                data = await self._loop.sock_recv(sock, _READ)
                if not data:
                    break
                self._send(Frame(Kind.DATA, stream, data))
        except OSError:
            pass
        self._close(stream, sock)


async def serve(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    relay = Relay(fd)
    relay.start()
    await relay.closed.wait()
