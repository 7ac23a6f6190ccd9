"""Kernel modules the pod VM loads after boot (overlay, loop, virtio_net, dm-crypt and friends).

The image's initramfs loads only what mapping the root and listening on vsock need; the rest is in
the verity-protected root under /usr/lib/modules with its load order (dependencies first) in
``deferred.load`` (image.build.rootfs). The builtin agent loads them with ``finit_module(2)`` while
its backend starts, so no request that needs them runs before they are in. Paths come only from
that measured list and must stay below the modules directory.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path

__all__ = ["DEFERRED_LIST", "KernelModuleError", "load_deferred_modules"]

log = logging.getLogger("guest.backend")

DEFERRED_LIST = Path("/usr/lib/modules/deferred.load")
_SYS_FINIT_MODULE = 313  # x86_64


class KernelModuleError(OSError):
    """A module of the image's list could not be loaded (the image is broken: fail closed)."""


def _finit_module(fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(ctypes.c_long(_SYS_FINIT_MODULE), ctypes.c_int(fd), ctypes.c_char_p(b""),
                    ctypes.c_int(0)) == 0:
        return 0
    return ctypes.get_errno()


def load_deferred_modules(listing: Path = DEFERRED_LIST) -> list[str]:
    """Load every module named in ``listing`` in order; the names loaded now (already loaded ones
    are skipped). No listing (not the pod-VM image): nothing to do."""
    try:
        names = listing.read_text().split()
    except FileNotFoundError:
        return []
    base = listing.parent.resolve()
    loaded = []
    for name in names:
        path = (base / name).resolve()
        if not path.is_relative_to(base) or path.suffix != ".ko":
            raise KernelModuleError(errno.EINVAL, f"module path outside {base} or not a .ko", name)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            err = _finit_module(fd)
        finally:
            os.close(fd)
        if err == errno.EEXIST:
            continue
        if err:
            raise KernelModuleError(err, f"finit_module: {os.strerror(err)}", name)
        loaded.append(name)
    log.info("event=kernel_modules_loaded count=%d", len(loaded))
    return loaded
