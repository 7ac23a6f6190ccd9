"""mount(2) / umount2(2) through libc (no shelling out to mount in production)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from .errors import StorageError

__all__ = ["MS_NODEV", "MS_NOSUID", "MS_RDONLY", "make_pod_shared", "mount", "umount"]

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_SHARED = 1 << 20

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


def make_pod_shared(target: Path) -> None:
    """Make the mount at ``target`` (a volume shared by the pod's containers) a shared mount, in a
    peer group of its own: a mount a container makes under it through a Bidirectional (``rshared``)
    bind, such as the initializer's decrypted secure-pv, then reaches the guest's mount and, from
    there, every container that binds it with HostToContainer (``rslave``). Only this mount, not
    its parents: the rest of the guest's tree stays private to the agent."""
    rc = _libc.mount(None, str(target).encode(), None, ctypes.c_ulong(MS_SHARED), None)
    if rc != 0:
        err = ctypes.get_errno()
        raise StorageError(f"make {target} a shared mount: {os.strerror(err)} (errno {err})")
