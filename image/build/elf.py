"""Shared-library closure of host ELF binaries, so binaries can be copied into the image."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .errors import ToolError

__all__ = ["is_elf", "library_closure", "usr_merged"]

_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def usr_merged(path: str) -> str:
    """The path under /usr for a bookworm merged-/usr system (/lib/x → /usr/lib/x)."""
    parent, name = os.path.split(path)
    return os.path.join(os.path.realpath(parent), name)


def library_closure(binaries: Iterable[Path]) -> dict[str, Path]:
    """Image path → host file of every shared library the binaries load (via ``ldd``)."""
    libs: dict[str, Path] = {}
    for binary in sorted(set(binaries)):
        argv = ["ldd", str(binary)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            if "not a dynamic executable" in proc.stdout + proc.stderr:
                continue
            raise ToolError(argv, proc.returncode, proc.stderr)
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise ToolError(argv, 1, f"{binary}: {line.strip()}")
            m = _LDD_LINE.search(line)
            if m:
                libs[usr_merged(m.group(1))] = Path(m.group(1)).resolve()
    return libs
