"""A process's stdio: containerd's FIFOs on the host, the agent's streams in the guest.

Output is copied the way Kata's shim does: ReadStdout/ReadStderr with 32 KiB, each reply's bytes
written to the FIFO, an empty reply is EOF. Input: bytes read from the stdin FIFO go to WriteStdin,
EOF to CloseStdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from pathlib import Path

from google.protobuf import empty_pb2

from guest.protocols import agent_pb2
from guest.ttrpc import TtrpcError

from .agent import READ_CHUNK, AgentClient

__all__ = ["copy_input", "copy_output", "open_fifo_writer", "release_fifos"]

log = logging.getLogger("runtime.stdio")

OPEN_TIMEOUT = 10.0


async def open_fifo_writer(path: Path) -> int:
    """Open the FIFO for writing once containerd has its reader open (ENXIO until then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OPEN_TIMEOUT
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno != errno.ENXIO or loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return fd


def release_fifos(outputs: list[Path | None], stdin: Path | None) -> None:
    """A process that never started: open and close our side of each FIFO, so containerd's copiers
    see EOF (outputs) or a closed pipe (stdin) at once instead of waiting for a writer that never
    comes (the runc shim closes its IO the same way when a start fails)."""
    for path, flags in [*((p, os.O_WRONLY) for p in outputs), (stdin, os.O_RDONLY)]:
        if path is None:
            continue
        try:
            fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:  # ENXIO: no reader is waiting, so nobody hangs on this one
            continue
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def copy_output(agent: AgentClient, method: str, cid: str, exec_id: str, path: Path | None) -> None:
    """Copy one output stream until EOF (an empty reply) or an agent error."""
    fd = -1
    if path is not None:
        try:
            fd = await open_fifo_writer(path)
        except OSError as e:
            log.warning("event=fifo_open_failed path=%s error=%s", path, e.strerror)
    try:
        while True:
            try:
                reply = await agent.call(
                    method,
                    agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=READ_CHUNK),
                    agent_pb2.ReadStreamResponse,
                )
            except TtrpcError as e:
                log.info("event=stream_end method=%s cid=%s reason=%r", method, cid, e.status.message)
                return
            if not reply.data:
                return
            if fd >= 0:
                try:
                    await asyncio.to_thread(_write_all, fd, reply.data)
                except OSError as e:  # the reader went away: keep draining so the process is not blocked
                    log.info("event=fifo_write_failed path=%s error=%s", path, e.strerror)
                    os.close(fd)
                    fd = -1
    finally:
        if fd >= 0:
            os.close(fd)


async def copy_input(agent: AgentClient, cid: str, exec_id: str, path: Path, closed: asyncio.Event) -> None:
    """Copy the stdin FIFO to the process until EOF or CloseIO; then CloseStdin."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        fd = -1
        try:
            while not closed.is_set():
                read = asyncio.ensure_future(reader.read(READ_CHUNK))
                stop = asyncio.ensure_future(closed.wait())
                done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if read not in done:
                    read.cancel()
                    break
                data = read.result()
                if not data:
                    break
                await agent.call(
                    "WriteStdin",
                    agent_pb2.WriteStreamRequest(container_id=cid, exec_id=exec_id, data=data),
                    agent_pb2.WriteStreamResponse,
                )
        finally:
            transport.close()
        await agent.call(
            "CloseStdin", agent_pb2.CloseStdinRequest(container_id=cid, exec_id=exec_id), empty_pb2.Empty
        )
    except (TtrpcError, OSError) as e:
        log.info("event=stdin_end cid=%s exec=%s reason=%r", cid, exec_id, str(e))
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
