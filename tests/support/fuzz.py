"""Bounded atheris runs in a subprocess, the same way for every fuzz target.

A target is a module under ``tests/`` run with ``python -m`` from the repository root, so it imports
the project and its sibling helpers by package path. A run must end cleanly within its time budget; a
crash or a finding fails the test with the end of atheris's output. The budget is 15 s unless
``<AREA>_FUZZ_SECONDS`` (the test's ``seconds_env``) or ``FUZZ_SECONDS`` says otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO

DEFAULT_SECONDS = 15


def budget(seconds_env: str | None = None, default: int = DEFAULT_SECONDS) -> int:
    for name in (seconds_env, "FUZZ_SECONDS"):
        if name and os.environ.get(name):
            return int(os.environ[name])
    return default


@dataclass
class FuzzRun:
    module: str
    proc: subprocess.Popen[str]
    seconds: int

    def wait(self) -> str:
        """Wait for the run; assert it exited 0; return its output."""
        out, _ = self.proc.communicate(timeout=self.seconds + 300)
        assert self.proc.returncode == 0, f"{self.module} exited {self.proc.returncode}:\n{out[-4000:]}"
        return out


def start_fuzzer(
    module: str, corpus: Path, *, seconds_env: str | None = None, default_seconds: int = DEFAULT_SECONDS,
    max_len: int | None = None, rss_limit_mb: int = 2048, args: Sequence[str] = (),
    options: Sequence[str] = (),
) -> FuzzRun:
    """Start ``python -m module [args] -max_total_time=... [options] corpus`` in the background."""
    seconds = budget(seconds_env, default_seconds)
    command = [sys.executable, "-m", module, *args, f"-max_total_time={seconds}",
               f"-rss_limit_mb={rss_limit_mb}", *options]
    if max_len is not None:
        command.append(f"-max_len={max_len}")
    command.append(str(corpus))
    proc = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return FuzzRun(module, proc, seconds)


def run_fuzzer(
    module: str, corpus: Path, *, seconds_env: str | None = None, default_seconds: int = DEFAULT_SECONDS,
    max_len: int | None = None, rss_limit_mb: int = 2048, args: Sequence[str] = (),
    options: Sequence[str] = (),
) -> str:
    """:func:`start_fuzzer` and wait: assert a clean exit, return atheris's output."""
    return start_fuzzer(module, corpus, seconds_env=seconds_env, default_seconds=default_seconds,
                        max_len=max_len, rss_limit_mb=rss_limit_mb, args=args, options=options).wait()
