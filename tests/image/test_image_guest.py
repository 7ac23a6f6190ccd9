"""Inside the pod VM: the root is the verity-mapped erofs the command line pins."""

from __future__ import annotations

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


def test_agent_listens_on_vsock() -> None:
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((1, AGENT_PORT))
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"
