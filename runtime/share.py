"""Bind mounts without a shared filesystem: Kata's CopyFile (shared_fs = none).

Each ``bind`` mount of the container's spec whose source is a host file or directory (except
/dev/shm, which becomes the sandbox's shm) is copied into the guest before CreateContainer, and the
mount's source rewritten to the copy: ``/run/kata-containers/shared/containers/<cid>-<16 hex>-<name>``.
Directories are walked depth-first in lexical order, symbolic links copied as links, regular files
sent in 1 MiB chunks; sockets, FIFOs and devices are skipped (a mount whose source is one is left out).
Sizes are bounded so a client cannot make the shim stream an unbounded tree into the VM.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import empty_pb2

from guest.protocols import agent_pb2, oci_pb2

from .errors import InvalidInputError

__all__ = ["GUEST_SHARED", "MAX_SHARED_BYTES", "share_bind_mounts"]

GUEST_SHARED = "/run/kata-containers/shared/containers"
CHUNK = 1 << 20
MAX_SHARED_BYTES = 64 << 20  # per container
MAX_SHARED_ENTRIES = 4096
DIR_MODE = 0x800001E8  # Go's os.ModeDir | 0o750, as Kata's runtime sends it

Call = Callable[..., Awaitable[object]]


@dataclass
class _Budget:
    bytes: int = 0
    entries: int = 0

    def take(self, size: int, source: str) -> None:
        self.bytes += size
        self.entries += 1
        if self.bytes > MAX_SHARED_BYTES or self.entries > MAX_SHARED_ENTRIES:
            raise InvalidInputError(
                "bind mount source",
                source,
                f"at most {MAX_SHARED_BYTES} bytes and {MAX_SHARED_ENTRIES} entries to copy",
            )


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    st = os.lstat(root)
    yield root, st
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(root)):
            yield from _walk(root / name)


def _entries(root: Path) -> list[tuple[Path, os.stat_result]]:
    return list(_walk(root))


async def share_bind_mounts(call: Call, cid: str, spec: oci_pb2.Spec) -> None:
    budget = _Budget()
    keep: list[oci_pb2.Mount] = []
    for m in spec.Mounts:
        if m.type != "bind" or m.destination == "/dev/shm":
            keep.append(m)
            continue
        src = Path(m.source)
        try:
            top = os.stat(src)  # the bind mount follows a link at the source, as the kernel's would
        except OSError:
            continue
        if not (stat.S_ISREG(top.st_mode) or stat.S_ISDIR(top.st_mode)):
            continue
        name = Path(m.destination).name or "root"
        guest_root = f"{GUEST_SHARED}/{cid}-{secrets.token_hex(8)}-{name}"
        resolved = await asyncio.to_thread(src.resolve)
        entries = await asyncio.to_thread(_entries, resolved)
        for host, st in entries:
            guest = guest_root + ("" if host == resolved else "/" + str(host.relative_to(resolved)))
            base = agent_pb2.CopyFileRequest(
                path=guest, file_mode=st.st_mode, dir_mode=DIR_MODE, uid=st.st_uid, gid=st.st_gid
            )
            if stat.S_ISDIR(st.st_mode):
                budget.take(0, m.source)
                await call("CopyFile", base, empty_pb2.Empty)
            elif stat.S_ISLNK(st.st_mode):
                budget.take(0, m.source)
                base.data = os.readlink(host).encode()
                await call("CopyFile", base, empty_pb2.Empty)
            elif stat.S_ISREG(st.st_mode):
                budget.take(st.st_size, m.source)
                fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    offset = 0
                    while True:
                        chunk = f.read(min(CHUNK, size - offset))
                        req = agent_pb2.CopyFileRequest()
                        req.CopyFrom(base)
                        req.file_size, req.offset, req.data = size, offset, chunk
                        await call("CopyFile", req, empty_pb2.Empty)
                        offset += len(chunk)
                        if offset >= size or not chunk:
                            break
        m.source = guest_root
        keep.append(m)
    del spec.Mounts[:]
    spec.Mounts.extend(keep)
