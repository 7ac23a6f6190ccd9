"""Processes the agent owns: child-subreaper reaping, stdio pipes or a pty, exit statuses.

The agent is the child subreaper of everything the OCI runtime starts (``crun create``/``exec
--detach`` exit after forking, their children are re-parented to us), so one SIGCHLD handler reaps
every child with ``waitpid(-1)`` — like kata-agent's — and resolves the waiter of that pid. The exit
status is the exit code, or 128 + the signal number for a process killed by a signal.
Everything runs on the event loop thread, so a pid is registered before its SIGCHLD can be handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import signal
import struct
import termios
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["ExitStatus", "InputStream", "OutputStream", "Process", "Reaper", "become_subreaper"]

log = logging.getLogger("guest.backend")

PR_SET_CHILD_SUBREAPER = 36
_EXITED_KEPT = 4096  # statuses of pids nobody waits for yet (bounded: orphans re-parented to us)

ExitStatus = int


def become_subreaper() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def exit_status(wait_status: int) -> ExitStatus:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    """Reaps every child of this process; ``wait(pid)`` is a future of its exit status."""

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[ExitStatus]] = {}
        self._exited: OrderedDict[int, ExitStatus] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_status(status)
            fut = self._waiters.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(code)
            else:
                self._exited[pid] = code
                while len(self._exited) > _EXITED_KEPT:
                    self._exited.popitem(last=False)

    def wait(self, pid: int) -> asyncio.Future[ExitStatus]:
        loop = asyncio.get_running_loop()
        fut = self._waiters.get(pid)
        if fut is not None:
            return fut
        fut = loop.create_future()
        if pid in self._exited:
            fut.set_result(self._exited.pop(pid))
        else:
            self._waiters[pid] = fut
            self.reap()  # the SIGCHLD may already be pending
        return fut


async def _wait_fd(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


class OutputStream:
    """The agent's end of a process's stdout/stderr pipe, or of its pty master."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd: int | None = fd
        self._lock = asyncio.Lock()

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes once at least one is there; b"" at EOF (or a hung-up pty)."""
        async with self._lock:
            while True:
                if self.fd is None:
                    return b""
                try:
                    return os.read(self.fd, size)
                except BlockingIOError:
                    pass
                except OSError as e:
                    if e.errno == errno.EIO:  # pty: every slave end closed
                        return b""
                    raise
                await _wait_fd(self.fd, write=False)

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class InputStream:
    """The agent's end of a process's stdin pipe (or the pty master, shared with stdout)."""

    def __init__(self, fd: int, *, owns_fd: bool = True, tty: bool = False) -> None:
        os.set_blocking(fd, False)
        self.fd: int | None = fd
        self.owns_fd = owns_fd
        self.tty = tty
        self._lock = asyncio.Lock()

    async def write(self, data: bytes) -> int:
        async with self._lock:
            view = memoryview(data)
            while view:
                if self.fd is None:
                    raise BrokenPipeError(errno.EPIPE, "stdin is closed")
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:
                    await _wait_fd(self.fd, write=True)
            return len(data)

    async def close(self) -> None:
        async with self._lock:
            if self.fd is None:
                return
            if self.tty:
                # Closing the pty master would hang the process up: send end-of-file instead.
                with contextlib.suppress(OSError):
                    os.write(self.fd, bytes([termios.tcgetattr(self.fd)[6][termios.VEOF][0]]))
                self.fd = None
                return
            if self.owns_fd:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
            self.fd = None


@dataclass
class Process:
    """One process of a container: the init process (exec_id = container id) or an exec."""

    exec_id: str
    pid: int
    exit: asyncio.Future[ExitStatus]
    stdin: InputStream | None = None
    stdout: OutputStream | None = None
    stderr: OutputStream | None = None
    tty: int | None = None  # the pty master, if the process has a terminal
    init: bool = False
    extra_fds: list[int] = field(default_factory=list)

    def resize(self, rows: int, columns: int) -> None:
        if self.tty is None:
            raise OSError(errno.ENOTTY, "no tty")
        fcntl.ioctl(self.tty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def signal(self, sig: int) -> None:
        """Send ``sig``; a process that is already gone is not an error (kata ignores ESRCH)."""
        if self.exit.done():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def close(self) -> None:
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        if self.stdin is not None and self.stdin.owns_fd and self.stdin.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.stdin.fd)
            self.stdin.fd = None
        for fd in self.extra_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.extra_fds.clear()
        self.tty = None


def handles_sigterm(pid: int) -> bool:
    """Whether ``pid`` catches SIGTERM (SigCgt of /proc/<pid>/status); False if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except (OSError, ValueError):
        pass
    return False
