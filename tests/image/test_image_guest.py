"""Inside the pod VM: the root is the verity-mapped erofs the command line pins."""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm(guest=True)

AGENT_PORT = 1024


def _cmdline() -> str:
    return Path("/proc/cmdline").read_text()


def _pinned_table() -> list[str]:
    m = re.search(r'dm-mod\.create="([^"]*)"', _cmdline())
    assert m, "no dm-mod.create on the kernel command line"
    name, _uuid, _minor, flags, table = m.group(1).split(",", 4)
    assert (name, flags) == ("dm-verity", "ro")
    return table.split()


def test_root_is_read_only_erofs_on_dm0() -> None:
    root = [line.split() for line in Path("/proc/mounts").read_text().splitlines() if line.split()[1] == "/"]
    dev, _, fstype, opts = root[-1][:4]
    assert (dev, fstype) == ("/dev/dm-0", "erofs")
    assert "ro" in opts.split(",")


def test_root_device_is_the_pinned_verity_mapping() -> None:
    table = _pinned_table()
    assert table[2] == "verity" and table[3] == "1"
    assert Path("/sys/block/dm-0/dm/name").read_text().strip() == "dm-verity"
    assert Path("/sys/block/dm-0/ro").read_text().strip() == "1"
    sectors = int(Path("/sys/block/dm-0/size").read_text())
    assert sectors == int(table[1])


def test_bytecode_is_unchecked_hash() -> None:
    import importlib.util

    pyc = Path(importlib.util.cache_from_source(os.__file__))
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b01, "stdlib .pyc must be hash-based and unchecked (read-only root)"


def test_project_bytecode_is_unchecked_hash_too() -> None:
    """The agent's own modules and its dependencies are precompiled as well (nothing compiled at boot)."""
    import importlib.util

    root = Path("/usr/lib/python3/dist-packages")
    for module in ("guest/cli.py", "guest/backend/service.py", "google/protobuf/descriptor_pool.py"):
        pyc = Path(importlib.util.cache_from_source(str(root / module)))
        assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01, pyc


def test_deferred_kernel_modules_are_in_the_verity_root_and_loaded() -> None:
    """Only root and vsock modules come from the initramfs; the rest sit in the verity root and are
    loaded after boot (by the agent; by the init in test boots)."""
    listing = Path("/usr/lib/modules/deferred.load").read_text().split()
    assert any(m.endswith("/overlay.ko") for m in listing)
    assert any(m.endswith("/dm-crypt.ko") for m in listing)
    for m in listing:
        assert (Path("/usr/lib/modules") / m).is_file(), m
    loaded = {line.split()[0] for line in Path("/proc/modules").read_text().splitlines()}
    assert {"overlay", "loop", "virtio_net", "dm_crypt", "dm_integrity", "dm_verity", "erofs"} <= loaded


def test_agent_listens_on_vsock() -> None:
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((1, AGENT_PORT))
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"


def _read_direct(dev: str, block: int) -> bytes:
    """One 4 KiB block with O_DIRECT: past the guest page cache, so every read reaches verity."""
    import mmap

    buf = mmap.mmap(-1, 4096)
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.preadv(fd, [buf], block * 4096)
        assert n == 4096
        return bytes(buf)
    finally:
        os.close(fd)
        buf.close()


def test_tampered_root_block_reads_fail_with_eio() -> None:
    """With cg.tamper=1 the host flips one byte of root data while the VM runs (tests/image)."""
    if " cg.tamper=1" not in f" {_cmdline()}":
        pytest.skip("only in the tamper boot (tests/image/test_image_vm.py)")
    import time

    table = _pinned_table()
    block = int(table[7]) // 2  # a data block in the middle of the root filesystem
    original = _read_direct("/dev/vda", block)
    assert _read_direct("/dev/dm-0", block) == original
    with open("/dev/console", "w") as console:  # pytest captures stdout; the host reads the console
        console.write(f"MARK tamper-ready block={block}\n")
    deadline = time.monotonic() + 240  # generous: TCG on a loaded host is slow
    while _read_direct("/dev/vda", block) == original:  # the raw disk, not verity-checked
        assert time.monotonic() < deadline, "host did not modify the disk"
        time.sleep(0.05)
    with pytest.raises(OSError) as e:
        _read_direct("/dev/dm-0", block)
    assert e.value.errno == errno.EIO
    assert _read_direct("/dev/dm-0", block + 1)  # neighbours still verify
