"""Staging-directory steps: bytecode compilation and the erofs image."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import ToolError

__all__ = ["GUEST_PYTHON", "compile_bytecode", "erofs_version", "make_erofs", "run"]

# Compile with the interpreter that runs in the guest, so the .pyc magic matches.
GUEST_PYTHON = Path("/usr/bin/python3.11")
FS_UUID = "c0c0a000-0000-4000-8000-000000000001"


def run(argv: list[str], **kw: object) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise ToolError(argv, proc.returncode, proc.stderr + proc.stdout)
    return str(proc.stdout)


def compile_bytecode(stage: Path, dirs: list[str]) -> None:
    """``.pyc`` next to every module, *unchecked-hash* so Python never re-stats the read-only root
    (timestamp pycs are stale after ``mkfs.erofs -T`` and would be recompiled at every boot)."""
    targets = [str(stage / d) for d in dirs if (stage / d).is_dir()]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOURCE_DATE_EPOCH": "0", "PYTHONHASHSEED": "0"}
    run([str(GUEST_PYTHON), "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
         "unchecked-hash", "-s", str(stage), "-p", "/", *targets], env=env)


def erofs_version() -> str:
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "erofs-utils"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def make_erofs(stage: Path, out: Path, epoch: int, compression: str = "lz4hc") -> None:
    argv = ["mkfs.erofs", "--quiet", f"-T{epoch}", f"-U{FS_UUID}", "--all-root"]
    if compression:
        argv.append(f"-z{compression}")
    run([*argv, str(out), str(stage)])
