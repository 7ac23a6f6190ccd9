"""The guest-pulled rootfs is a mount of its own without nosuid/nodev, although the tmpfs /run and
the image store holding it are nosuid,nodev (an image's set-user-ID programs work as under runc)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest.backend.storages import _program_mount

pytestmark = pytest.mark.root


def _options(target: Path) -> list[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target):
            return fields[5].split(",")
    raise AssertionError(f"{target} is not a mount point")


@pytest.fixture
def nosuid_run(tmp_path: Path) -> Iterator[Path]:
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=0755", "tmpfs", str(run)], check=True)
    try:
        yield run
    finally:
        subprocess.run(["umount", "-l", str(run)], check=False)


@pytest.mark.parametrize("separate", [True, False], ids=["store-tree", "in-place"])
def test_the_rootfs_mount_drops_nosuid_and_nodev(nosuid_run: Path, separate: bool) -> None:
    bundle = nosuid_run / "kata-containers" / "c1"
    rootfs = bundle / "rootfs"
    tree = nosuid_run / "store" / "rootfs" / "c1" / "rootfs" if separate else rootfs
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "su").write_bytes(b"\x7fELF")
    os.chmod(tree / "bin" / "su", 0o4755)
    rootfs.mkdir(parents=True, exist_ok=True)
    assert "nosuid" in _options(nosuid_run)
    undo = _program_mount(tree, rootfs)
    try:
        options = _options(rootfs)
        assert "nosuid" not in options and "nodev" not in options, options
        assert os.stat(rootfs / "bin" / "su").st_mode & 0o7777 == 0o4755
    finally:
        undo()
    with pytest.raises(AssertionError):
        _options(rootfs)
