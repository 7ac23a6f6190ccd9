"""Block-encrypted emptyDirs (Kata's ``emptydir_mode = "block-encrypted"``, genpolicy's
``emptyDir_encrypted``).

A disk-backed Kubernetes emptyDir of the pod (kubelet's ``…/pods/<the sandbox's pod
uid>/volumes/kubernetes.io~empty-dir/<name>``, not on a tmpfs) is not copied into the pod VM: as
Kata's runtime does, a sparse disk file ``disk.img`` is made
inside the emptyDir's directory (so kubelet's sizeLimit accounting sees what the pod writes), as large
as the filesystem holding it unless the configuration says otherwise, hotplugged once per sandbox and
sent with every container that mounts the volume as a ``blk`` storage (the disk stays attached until
the VM stops: an emptyDir lives as long as its pod):

    driver "blk", source <PCI path>, fstype "ext4", shared true,
    driver_options ["encryption_key=ephemeral", "create_filesystem"],
    mount_point /run/kata-containers/sandbox/storage/<base64url(PCI path)>,
    fs_group {group_id: <the directory's gid>} when that is not 0 (kubelet's fsGroup)

and the container's mount re-pointed at that mount point. The guest formats the disk as LUKS2 with
authenticated encryption under a key born in the VM; the host keeps ciphertext only. When the sandbox
ends the disk files are removed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from guest.protocols import agent_pb2, oci_pb2

from .errors import InvalidInputError

__all__ = ["DISK_NAME", "EMPTY_DIR", "GUEST_STORAGE", "TMPFS_MAGIC", "EmptyDirDisk", "EmptyDirDisks",
           "disk_empty_dir", "fs_type"]

log = logging.getLogger("runtime")

GUEST_STORAGE = "/run/kata-containers/sandbox/storage"
DISK_NAME = "disk.img"
EMPTY_DIR = re.compile(r"/volumes/kubernetes\.io~empty-dir/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)")
# The pod's own emptyDir: kubelet's <root>/pods/<pod uid>/volumes/kubernetes.io~empty-dir/<name>.
POD_EMPTY_DIR = re.compile(r"/pods/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                           r"/volumes/kubernetes\.io~empty-dir/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)/?")
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
TMPFS_MAGIC = 0x01021994
HUGETLBFS_MAGIC = 0x958458F6
# LUKS2's 16 MiB header plus room for dm-integrity's tags and ext4's journal: below this mkfs fails.
MIN_DISK_BYTES = 64 << 20
EPHEMERAL_OPTIONS = ("encryption_key=ephemeral", "create_filesystem")

Attach = Callable[[Path], Awaitable[str]]  # hotplug a disk file, return the guest's PCI path


def fs_type(path: str) -> int | None:
    """statfs(2)'s f_type of ``path`` (None if it cannot be read)."""
    import ctypes

    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return int.from_bytes(buf.raw[:8], "little")


def disk_empty_dir(source: str, pod_uid: str) -> str | None:
    """The volume name if ``source`` is an emptyDir of the pod ``pod_uid`` on a disk filesystem, else
    None (a memory or hugepages emptyDir, another pod's, or anything else: a hostPath that only looks
    like one must not get its ``disk.img`` truncated)."""
    m = POD_EMPTY_DIR.search(source)
    if m is None or m.end() != len(source) or not source.startswith("/") or m.group(1) != pod_uid:
        return None
    if fs_type(source) in (None, TMPFS_MAGIC, HUGETLBFS_MAGIC):
        return None
    return m.group(2)


@dataclass(frozen=True, slots=True)
class EmptyDirDisk:
    source: str  # the kubelet's emptyDir directory
    path: Path  # the disk file in it
    pci_path: str
    gid: int

    @property
    def mount_point(self) -> str:
        return f"{GUEST_STORAGE}/{base64.urlsafe_b64encode(self.pci_path.encode()).decode()}"

    def storage(self) -> agent_pb2.Storage:
        s = agent_pb2.Storage(driver="blk", driver_options=list(EPHEMERAL_OPTIONS), source=self.pci_path,
                              fstype="ext4", mount_point=self.mount_point, shared=True)
        if self.gid:
            s.fs_group.group_id = self.gid
        return s


def _make_disk(source: str, size_bytes: int) -> tuple[Path, int]:
    """``disk.img`` in the emptyDir (made afresh: a sandbox restart of the pod starts empty, as the
    old key is gone); (its path, the directory's gid). Never through a symbolic link."""
    real = os.path.realpath(source)
    try:
        dir_fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidInputError("emptyDir mount source", source, f"a directory ({e.strerror})") from None
    try:
        st = os.fstat(dir_fd)
        vfs = os.fstatvfs(dir_fd)
        size = size_bytes or vfs.f_blocks * vfs.f_frsize
        size -= size % 4096
        if size < MIN_DISK_BYTES:
            raise InvalidInputError("emptyDir disk size", f"{size} bytes", f"at least {MIN_DISK_BYTES} bytes")
        try:
            fd = os.open(DISK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         0o600, dir_fd=dir_fd)
        except OSError as e:
            raise InvalidInputError("emptyDir disk", f"{real}/{DISK_NAME}",
                                    f"a regular file or none (not a symbolic link: {e.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInputError("emptyDir disk", f"{real}/{DISK_NAME}", "a regular file")
            os.ftruncate(fd, 0)  # nothing of an earlier sandbox's ciphertext kept
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
    return Path(real) / DISK_NAME, st.st_gid


def _disk_mounts(spec: oci_pb2.Spec) -> list[tuple[oci_pb2.Mount, str]]:
    """The spec's bind mounts of the pod's disk emptyDirs, each with its directory's real path."""
    uid = spec.Annotations.get(SANDBOX_UID, "")
    out = []
    for m in spec.Mounts:
        if m.type != "bind" or disk_empty_dir(m.source, uid) is None:
            continue
        real = os.path.realpath(m.source)
        # through a symbolic link it must still be this pod's emptyDir, not where the link points
        if disk_empty_dir(real, uid) is not None:
            out.append((m, real))
    return out


class EmptyDirDisks:
    """The sandbox's emptyDir disks, one per emptyDir directory, hotplugged on first use."""

    def __init__(self, attach: Attach, size_mib: int) -> None:
        self._attach = attach
        self._size = size_mib << 20
        self.disks: dict[str, EmptyDirDisk] = {}

    async def rewrite(self, spec: oci_pb2.Spec) -> list[agent_pb2.Storage]:
        """Re-point the spec's disk emptyDir mounts at their volumes; the storages to send (one per
        volume, however many mounts of it the container has)."""
        out: dict[str, agent_pb2.Storage] = {}
        for m, key in await asyncio.to_thread(_disk_mounts, spec):
            disk = self.disks.get(key)
            if disk is None:
                path, gid = await asyncio.to_thread(_make_disk, m.source, self._size)
                try:
                    pci_path = await self._attach(path)
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
                disk = self.disks[key] = EmptyDirDisk(key, path, pci_path, gid)
                log.info("event=emptydir_disk_attached source=%s pci_path=%s size=%d", key, pci_path,
                         os.stat(path).st_size)
            m.source = disk.mount_point
            out.setdefault(disk.mount_point, disk.storage())
        return list(out.values())

    def remove_files(self) -> None:
        """The sandbox is gone: its disk files go (their data was unreadable without the VM's keys)."""
        for disk in self.disks.values():
            try:
                disk.path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("event=emptydir_disk_remove_failed path=%s error=%s", disk.path, e.strerror)
        self.disks.clear()
