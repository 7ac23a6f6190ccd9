"""The shim's block-encrypted emptyDir step on the host (the VM's hotplug recorded, not run): which
mounts become disks, the disk file made in the emptyDir, the storage sent, and hostile sources.
tests/runtime/test_runtime_emptydir.py runs the whole path through containerd into a pod VM."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest.protocols import oci_pb2
from runtime.emptydir import DISK_NAME, MIN_DISK_BYTES, EmptyDirDisks, disk_empty_dir
from runtime.errors import InvalidInputError
from runtime.share import share_bind_mounts

UID = "0e5a4b8c-1111-2222-3333-444455556666"


def _empty_dir(root: Path, name: str, uid: str = UID) -> Path:
    d = root / "pods" / uid / "volumes" / "kubernetes.io~empty-dir" / name
    d.mkdir(parents=True)
    d.chmod(0o777)
    return d


class Plugs:
    """Stands in for the VM's hotplug: records each disk file and hands out PCI paths in order."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    async def attach(self, path: Path) -> str:
        self.paths.append(path)
        return f"{0x10 + len(self.paths) - 1:02x}/00"


def _spec(*mounts: tuple[str, str]) -> oci_pb2.Spec:
    mounts_pb = [oci_pb2.Mount(destination=dst, source=src, type="bind", options=["rbind", "rprivate", "rw"])
                 for dst, src in mounts]
    return oci_pb2.Spec(Annotations={"io.kubernetes.cri.sandbox-uid": UID}, Mounts=mounts_pb)


async def test_a_disk_emptydir_becomes_one_sparse_disk_and_a_blk_storage(tmp_path: Path) -> None:
    scratch = _empty_dir(tmp_path, "scratch")
    plugs = Plugs()
    disks = EmptyDirDisks(plugs.attach, size_mib=128)
    spec = _spec(("/data", str(scratch)), ("/again", str(scratch)), ("/etc/hosts", str(tmp_path)))
    (storage,) = await disks.rewrite(spec)
    assert plugs.paths == [scratch / DISK_NAME]
    st = os.stat(scratch / DISK_NAME)
    assert st.st_size == 128 << 20 and st.st_blocks == 0 and st.st_mode & 0o777 == 0o600
    mount_point = "/run/kata-containers/sandbox/storage/" + base64.urlsafe_b64encode(b"10/00").decode()
    assert (storage.driver, storage.source, storage.fstype, storage.mount_point, storage.shared) == (
        "blk", "10/00", "ext4", mount_point, True)
    assert list(storage.driver_options) == ["encryption_key=ephemeral", "create_filesystem"]
    assert not storage.HasField("fs_group") and list(storage.options) == []
    assert [m.source for m in spec.Mounts] == [mount_point, mount_point, str(tmp_path)]
    # The next container of the pod naming the volume gets the same disk, not a second one.
    again = _spec(("/x", str(scratch)))
    assert [s.mount_point for s in await disks.rewrite(again)] == [mount_point]
    assert len(plugs.paths) == 1
    disks.remove_files()
    assert not (scratch / DISK_NAME).exists()


async def test_the_default_size_is_the_capacity_of_the_emptydirs_filesystem(tmp_path: Path) -> None:
    scratch = _empty_dir(tmp_path, "big")
    disks = EmptyDirDisks(Plugs().attach, size_mib=0)
    await disks.rewrite(_spec(("/big", str(scratch))))
    vfs = os.statvfs(scratch)
    capacity = vfs.f_blocks * vfs.f_frsize
    assert os.stat(scratch / DISK_NAME).st_size == capacity - capacity % 4096
    disks.remove_files()


@pytest.mark.root
async def test_an_fsgroup_directory_sends_its_group_and_a_restart_starts_empty(tmp_path: Path) -> None:
    scratch = _empty_dir(tmp_path, "shared")
    os.chown(scratch, -1, 2000)
    (scratch / DISK_NAME).write_bytes(b"ciphertext of the pod's last sandbox")
    disks = EmptyDirDisks(Plugs().attach, size_mib=64)
    (storage,) = await disks.rewrite(_spec(("/shared", str(scratch))))
    assert storage.fs_group.group_id == 2000
    assert b"ciphertext" not in (scratch / DISK_NAME).read_bytes()[:64]


@pytest.fixture
def memory_empty_dir(tmp_path: Path) -> Iterator[Path]:
    memory = _empty_dir(tmp_path, "mem")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(memory)], check=True)
    try:
        yield memory
    finally:
        subprocess.run(["umount", str(memory)], check=True)


@pytest.mark.root
async def test_memory_and_other_mounts_are_left_to_copyfile(tmp_path: Path, memory_empty_dir: Path) -> None:
    memory = memory_empty_dir
    assert disk_empty_dir(str(memory), UID) is None
    not_kubelet = tmp_path / "volumes" / "kubernetes.io~configmap" / "cfg"
    not_kubelet.mkdir(parents=True)
    for source in (str(not_kubelet), str(memory) + "/sub", "relative/volumes/kubernetes.io~empty-dir/x",
                   str(tmp_path / "pods/u/volumes/kubernetes.io~empty-dir/Upper")):
        assert disk_empty_dir(source, UID) is None, source
    disks = EmptyDirDisks(Plugs().attach, size_mib=64)
    spec = _spec(("/mem", str(memory)), ("/cfg", str(not_kubelet)))
    assert await disks.rewrite(spec) == []
    assert [m.source for m in spec.Mounts] == [str(memory), str(not_kubelet)]


async def test_a_rewritten_mount_is_not_copied_into_the_guest(tmp_path: Path) -> None:
    scratch = _empty_dir(tmp_path, "scratch")
    (scratch / "host-file").write_text("would be copied in shared-fs mode")
    disks = EmptyDirDisks(Plugs().attach, size_mib=64)
    spec = _spec(("/data", str(scratch)))
    await disks.rewrite(spec)
    calls: list[str] = []

    async def call(method: str, *_: object) -> object:
        calls.append(method)
        return None

    assert await share_bind_mounts(call, "c1", spec) == []
    assert calls == [] and len(spec.Mounts) == 1 and spec.Mounts[0].source.startswith(
        "/run/kata-containers/sandbox/storage/")
    disks.remove_files()


async def test_hostile_disk_files_and_sizes_are_refused(tmp_path: Path) -> None:
    """A symbolic link (or a directory, a FIFO) where the disk file goes is never followed or
    truncated; a size below what LUKS2 + ext4 need is refused with nothing hotplugged."""
    target = tmp_path / "precious"
    target.write_bytes(b"host data that must stay")
    plugs = Plugs()
    disks = EmptyDirDisks(plugs.attach, size_mib=64)
    link = _empty_dir(tmp_path, "link")
    (link / DISK_NAME).symlink_to(target)
    with pytest.raises(InvalidInputError, match="not a symbolic link"):
        await disks.rewrite(_spec(("/l", str(link))))
    assert target.read_bytes() == b"host data that must stay"
    fifo = _empty_dir(tmp_path, "fifo")
    os.mkfifo(fifo / DISK_NAME)
    with pytest.raises(InvalidInputError, match="a regular file"):
        await disks.rewrite(_spec(("/f", str(fifo))))
    small = EmptyDirDisks(plugs.attach, size_mib=(MIN_DISK_BYTES >> 20) - 1)
    with pytest.raises(InvalidInputError, match="emptyDir disk size"):
        await small.rewrite(_spec(("/s", str(_empty_dir(tmp_path, "small")))))
    assert plugs.paths == []


async def test_another_pods_emptydir_or_a_lookalike_hostpath_is_never_touched(tmp_path: Path) -> None:
    """A hostPath mount of another pod's emptyDir (or any directory named like one) is not this pod's
    emptyDir: no disk file is made or truncated there, the mount is left to CopyFile."""
    other = _empty_dir(tmp_path, "data", uid="99999999-8888-7777-6666-555555555555")
    (other / DISK_NAME).write_bytes(b"the other pod's ciphertext")
    lookalike = tmp_path / "srv" / "volumes" / "kubernetes.io~empty-dir" / "data"
    lookalike.mkdir(parents=True)
    (lookalike / DISK_NAME).write_bytes(b"someone's disk image")
    plugs = Plugs()
    disks = EmptyDirDisks(plugs.attach, size_mib=64)
    spec = _spec(("/a", str(other)), ("/b", str(lookalike)))
    assert await disks.rewrite(spec) == [] and plugs.paths == []
    assert (other / DISK_NAME).read_bytes() == b"the other pod's ciphertext"
    assert (lookalike / DISK_NAME).read_bytes() == b"someone's disk image"
    no_uid = oci_pb2.Spec(Mounts=[oci_pb2.Mount(destination="/c", source=str(_empty_dir(tmp_path, "c")),
                                                type="bind")])
    assert await disks.rewrite(no_uid) == []  # no pod (ctr run): nothing is an emptyDir


async def test_an_emptydir_path_that_is_a_symbolic_link_elsewhere_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc-like"
    elsewhere.mkdir()
    (elsewhere / DISK_NAME).write_bytes(b"not the pod's")
    volumes = tmp_path / "pods" / UID / "volumes" / "kubernetes.io~empty-dir"
    volumes.mkdir(parents=True)
    (volumes / "data").symlink_to(elsewhere)
    plugs = Plugs()
    disks = EmptyDirDisks(plugs.attach, size_mib=64)
    assert await disks.rewrite(_spec(("/d", str(volumes / "data")))) == [] and plugs.paths == []
    assert (elsewhere / DISK_NAME).read_bytes() == b"not the pod's"
