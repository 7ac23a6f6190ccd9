"""Child processes of the demo: started in their own session, logged to files, always stopped."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StepFailedError


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Children:
    """Every process the demo starts; `stop_all` is called on every exit path (including Ctrl-C)."""

    repo: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, argv: list[str], log: Path, extra_env: dict[str, str] | None = None,
              stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, *argv], cwd=self.repo, env={**self.env, **(extra_env or {})},
                stdout=subprocess.PIPE if stdout_pipe else out, stderr=out, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            )
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], log: Path, what: str, timeout: float = 120,
            extra_env: dict[str, str] | None = None) -> str:
        """Run to completion; returns stdout. A non-zero exit is a failed step with the log's tail."""
        proc = self.popen(argv, log, extra_env, stdout_pipe=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise StepFailedError(f"{what} did not finish within {timeout:.0f} s; log:\n{tail(log)}") from exc
        finally:  # also on Ctrl-C while waiting: never leave the child running
            self.stop(proc)
            self.procs.remove(proc)
        if proc.returncode != 0:
            raise StepFailedError(f"{what} exited with status {proc.returncode}; log:\n{tail(log)}")
        return out.decode(errors="replace")

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs.pop())


@dataclass(frozen=True)
class CoordinatorPorts:
    user: int
    mesh: int
    http: int
    probes: int
    transit: int


READY = re.compile(rb"ready userapi=(\d+) meshapi=(\d+) http=(\d+) probes=(\d+) transit=(\d+)")


def start_coordinator(children: Children, state_dir: Path, initdata: Path, log: Path,
                      timeout: float = 60) -> tuple[subprocess.Popen[bytes], CoordinatorPorts]:
    """`python -m coordinator --simulate-tee` on 127.0.0.1 with kernel-chosen ports (never busy)."""
    argv = ["-m", "coordinator", "--state-dir", str(state_dir), "--simulate-tee",
            "--simulate-initdata", str(initdata), "--listen-host", "127.0.0.1",
            "--user-port", "0", "--mesh-port", "0", "--http-port", "0", "--probe-port", "0",
            "--transit-port", "0"]
    proc = children.popen(argv, log, stdout_pipe=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffered += chunk
            if m := READY.search(buffered):
                return proc, CoordinatorPorts(*(int(g) for g in m.groups()))
        elif proc.poll() is not None:
            break
    raise StepFailedError(f"the Coordinator did not report ready within {timeout:.0f} s "
                     f"(exit status {proc.poll()}); log:\n{tail(log)}")
