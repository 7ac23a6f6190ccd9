"""The OCI runtime (crun from Debian, in the image) driven as a subprocess.

Only this module spawns processes. It uses ``posix_spawn`` and the backend's :class:`Reaper`
(never ``subprocess``, whose own ``waitpid`` would race the subreaper's). The runtime's own output
goes to a memfd, read once it exited; for ``create``/``exec`` the process's stdio are the
container's pipes, so the runtime's errors go to ``--log`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RuntimeFailedError
from .processes import Reaper

__all__ = ["ConsoleSocket", "OciRuntime", "Stdio"]

log = logging.getLogger("guest.backend")

DEFAULT_RUNTIME = Path("/usr/bin/crun")
DEFAULT_STATE_ROOT = Path("/run/crun")
_ENV = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin"}


@dataclass(frozen=True, slots=True)
class Stdio:
    """The three fds the runtime's child gets as 0, 1, 2."""

    stdin: int
    stdout: int
    stderr: int


class ConsoleSocket:
    """``--console-socket``: the runtime sends the pty master here with SCM_RIGHTS."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.setblocking(False)

    async def receive(self) -> int:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.sock)
        with conn:
            conn.setblocking(True)
            conn.settimeout(30)
            _msg, fds, _flags, _addr = await loop.run_in_executor(None, socket.recv_fds, conn, 4096, 1)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError("console socket: expected one pty master fd")
        return fds[0]

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class OciRuntime:
    def __init__(self, reaper: Reaper, binary: Path = DEFAULT_RUNTIME,
                 state_root: Path = DEFAULT_STATE_ROOT) -> None:
        self.reaper = reaper
        self.binary = binary
        self.state_root = state_root

    def _argv(self, log_file: Path | None, args: Sequence[str]) -> list[str]:
        argv = [str(self.binary), "--root", str(self.state_root)]
        if log_file is not None:
            # crun takes a log driver spec; runc (timed against it by tools/bench/pod) a plain path.
            argv += ["--log", str(log_file)] if self.binary.name == "runc" else [f"--log=file:{log_file}"]
        return argv + list(args)

    async def _run(self, args: Sequence[str], *, stdio: Stdio | None = None, log_file: Path | None = None,
                   command: str, container_id: str) -> bytes:
        """Run the runtime to completion; its output (stdout+stderr, or the log); error if rc != 0."""
        out = os.memfd_create("oci-runtime-output", os.MFD_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fds = (stdio.stdin, stdio.stdout, stdio.stderr) if stdio else (devnull, out, out)
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
            pid = os.posix_spawn(str(self.binary), self._argv(log_file, args), _ENV, file_actions=actions)
            code = await self.reaper.wait(pid)
            output = os.pread(out, 1 << 16, 0)
        finally:
            os.close(out)
            os.close(devnull)
        if code != 0:
            detail = output
            if log_file is not None and log_file.exists():
                detail = log_file.read_bytes()[-4096:]
            text = _log_text(detail) or f"exit status {code}"
            raise RuntimeFailedError(command, container_id, text)
        return output

    async def create(self, container_id: str, bundle: Path, pid_file: Path, stdio: Stdio,
                     console_socket: Path | None = None) -> int:
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._run([*args, container_id], stdio=stdio, log_file=bundle / "runtime.log",
                        command="create", container_id=container_id)
        return _read_pid(pid_file)

    async def start(self, container_id: str) -> None:
        await self._run(["start", container_id], command="start", container_id=container_id)

    async def exec(self, container_id: str, process_file: Path, pid_file: Path, stdio: Stdio,
                   console_socket: Path | None, log_file: Path) -> int:
        args = ["exec", "--detach", "--process", str(process_file), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._run([*args, container_id], stdio=stdio, log_file=log_file, command="exec",
                        container_id=container_id)
        return _read_pid(pid_file)

    async def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(sig)]
        await self._run(args, command="kill", container_id=container_id)

    async def delete(self, container_id: str, *, force: bool = True) -> None:
        await self._run(["delete", *(["--force"] if force else []), container_id], command="delete",
                        container_id=container_id)

    async def state(self, container_id: str) -> dict[str, object]:
        out = await self._run(["state", container_id], command="state", container_id=container_id)
        value = json.loads(out)
        if not isinstance(value, dict):
            raise RuntimeFailedError("state", container_id, "not a JSON object")
        return value


def _read_pid(pid_file: Path) -> int:
    text = pid_file.read_text().strip()
    if not text.isdigit():
        raise RuntimeFailedError("pid-file", str(pid_file), f"not a pid: {text[:40]!r}")
    return int(text)


def _log_text(raw: bytes) -> str:
    """The runtime's messages, one per line (crun's log lines may be JSON objects with "msg")."""
    lines = []
    for line in raw.decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and "msg" in entry:
                line = str(entry["msg"])
        except ValueError:
            pass
        lines.append(line)
    return "; ".join(lines[-5:])


async def run_tool(reaper: Reaper, argv: Sequence[str]) -> tuple[int, str]:
    """Run a helper program (e.g. busybox unshare) to completion; (exit status, its output)."""
    out = os.memfd_create("agent-tool-output", os.MFD_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate((devnull, out, out))]
        pid = os.posix_spawn(argv[0], list(argv), _ENV, file_actions=actions)
        code = await reaper.wait(pid)
        return code, os.pread(out, 1 << 16, 0).decode(errors="replace")
    finally:
        os.close(out)
        os.close(devnull)
