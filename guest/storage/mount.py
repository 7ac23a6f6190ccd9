"""mount(2) / umount2(2) through libc (no shelling out to mount in production)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from .errors import StorageError

__all__ = ["MS_NODEV", "MS_NOSUID", "MS_RDONLY", "mount", "umount"]

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount(source: str, target: Path, fstype: str, flags: int, data: str = "") -> None:
    rc = _libc.mount(source.encode(), str(target).encode(), fstype.encode(), ctypes.c_ulong(flags),
                     data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise StorageError(f"mount {source} on {target} ({fstype}): {os.strerror(err)} (errno {err})")


def umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), 0) != 0:
        err = ctypes.get_errno()
        raise StorageError(f"umount {target}: {os.strerror(err)} (errno {err})")
