"""Deterministic cpio "newc" archives for the initramfs.

The kernel unpacks the initramfs from this format (``Documentation/driver-api/early-userspace``).
Every field that would leak the build machine (inode numbers, owners, timestamps) is fixed, and
entries are written in the order given, so the same entry list always gives the same bytes — the
initramfs is measured at launch.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CpioEntry", "directory", "regular", "symlink", "write_newc"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class CpioEntry:
    """One archive member; ``name`` is relative (no leading slash)."""

    name: str
    mode: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("/") or ".." in self.name.split("/"):
            raise ValueError(f"cpio member name must be relative without '..', got {self.name!r}")


def directory(name: str, perm: int = 0o755) -> CpioEntry:
    return CpioEntry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, nlink: int, size: int, namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0)
    return _MAGIC + b"".join(b"%08x" % f for f in fields)


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """Serialise ``entries`` (parents before children) followed by the trailer."""
    out = bytearray()
    for ino, entry in enumerate([*entries, CpioEntry(_TRAILER, 0)], start=1):
        name = entry.name.encode() + b"\0"
        is_dir = stat.S_ISDIR(entry.mode)
        trailer = entry.name == _TRAILER
        out += _header(0 if trailer else ino, entry.mode, 2 if is_dir else 1, len(entry.data), len(name))
        out += name + _pad4(110 + len(name))
        out += entry.data + _pad4(len(entry.data))
    return bytes(out)
