"""Bind mounts without a shared filesystem: Kata's CopyFile (shared_fs = none).

Each ``bind`` mount of the container's spec whose source is a host file or directory (except
/dev/shm, which becomes the sandbox's shm) is copied into the guest before CreateContainer, and the
mount's source rewritten to the copy: ``/run/kata-containers/shared/containers/<cid>-<16 hex>-<name>``.
Directories are walked depth-first in lexical order, symbolic links copied as links, regular files
sent in 1 MiB chunks; sockets, FIFOs and devices are skipped (a mount whose source is one is left out).
Sizes are bounded so a client cannot make the shim stream an unbounded tree into the VM; every tree
is walked and charged first, so an over-budget container fails with nothing copied.

A Kubernetes memory-medium emptyDir (kubelet's ``…/volumes/kubernetes.io~empty-dir/<name>`` on a tmpfs)
is not copied: as Kata's runtime does, it becomes an ``ephemeral`` storage, a tmpfs in the guest at
``/run/kata-containers/sandbox/ephemeral/<name>`` shared by the pod's containers, and the mount's source
that path; ``share_bind_mounts`` returns those storages for the CreateContainer request.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import empty_pb2

from guest.protocols import agent_pb2, oci_pb2

from .emptydir import EMPTY_DIR, GUEST_STORAGE, TMPFS_MAGIC, fs_type
from .errors import InvalidInputError

__all__ = ["GUEST_EPHEMERAL", "GUEST_SHARED", "MAX_SHARED_BYTES", "share_bind_mounts"]

GUEST_SHARED = "/run/kata-containers/shared/containers"
GUEST_EPHEMERAL = "/run/kata-containers/sandbox/ephemeral"
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


def _entries(root: Path, budget: _Budget, source: str) -> list[tuple[Path, os.stat_result]]:
    """The tree at ``root`` depth-first in lexical order, charged to ``budget`` while it is walked:
    a too-large (or too-deep) tree fails here, before anything is listed in full or sent."""
    out: list[tuple[Path, os.stat_result]] = []
    stack = [root]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        budget.take(st.st_size if stat.S_ISREG(st.st_mode) else 0, source)
        out.append((path, st))
        if stat.S_ISDIR(st.st_mode):
            stack.extend(path / name for name in sorted(os.listdir(path), reverse=True))
    return out


def memory_empty_dir(source: str) -> str | None:
    """The volume name if ``source`` is a kubelet emptyDir on a tmpfs (medium: Memory), else None."""
    m = EMPTY_DIR.search(source)
    if m is None or m.end() != len(source.rstrip("/")) or fs_type(source) != TMPFS_MAGIC:
        return None
    return m.group(1)


async def share_bind_mounts(call: Call, cid: str, spec: oci_pb2.Spec) -> list[agent_pb2.Storage]:
    """Copy the bind mounts' sources in, re-point the mounts; the ephemeral storages to send."""
    budget = _Budget()
    keep: list[oci_pb2.Mount] = []
    storages: list[agent_pb2.Storage] = []
    plan: list[tuple[oci_pb2.Mount, Path, list[tuple[Path, os.stat_result]]]] = []
    for m in spec.Mounts:
        if m.type != "bind" or m.destination == "/dev/shm" or m.source.startswith(GUEST_STORAGE + "/"):
            keep.append(m)  # (a block emptyDir's mount: already re-pointed at its guest volume)
            continue
        volume = memory_empty_dir(m.source)
        if volume is not None:
            guest = f"{GUEST_EPHEMERAL}/{volume}"
            if all(s.mount_point != guest for s in storages):
                storages.append(agent_pb2.Storage(driver="ephemeral", source="tmpfs", fstype="tmpfs",
                                                  mount_point=guest))
            m.source = guest
            keep.append(m)
            continue
        src = Path(m.source)
        try:
            top = os.stat(src)  # the bind mount follows a link at the source, as the kernel's would
        except OSError:
            continue
        if not (stat.S_ISREG(top.st_mode) or stat.S_ISDIR(top.st_mode)):
            continue
        resolved = await asyncio.to_thread(src.resolve)
        # Every tree is walked and charged before the first CopyFile: an over-budget container
        # fails with nothing copied into the guest.
        entries = await asyncio.to_thread(_entries, resolved, budget, m.source)
        plan.append((m, resolved, entries))
        keep.append(m)
    for m, resolved, entries in plan:
        name = Path(m.destination).name or "root"
        guest_root = f"{GUEST_SHARED}/{cid}-{secrets.token_hex(8)}-{name}"
        for host, st in entries:
            guest = guest_root + ("" if host == resolved else "/" + str(host.relative_to(resolved)))
            base = agent_pb2.CopyFileRequest(
                path=guest, file_mode=st.st_mode, dir_mode=DIR_MODE, uid=st.st_uid, gid=st.st_gid
            )
            if stat.S_ISDIR(st.st_mode):
                await call("CopyFile", base, empty_pb2.Empty)
            elif stat.S_ISLNK(st.st_mode):
                base.data = os.readlink(host).encode()
                await call("CopyFile", base, empty_pb2.Empty)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    # Never more than was charged, should the file have grown since the walk.
                    size = min(os.fstat(f.fileno()).st_size, st.st_size)
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
    del spec.Mounts[:]
    spec.Mounts.extend(keep)
    return storages
