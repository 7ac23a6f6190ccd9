"""The kubelet's root directory on a shared mount, as kubelet makes it at start: containerd's CRI
accepts a Bidirectional mount only from a shared mount and HostToContainer only from a shared or
slave one (this machine's / is private). A memory emptyDir mounted under it is shared too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tools.kube import make_rshared, undo_rshared

pytestmark = pytest.mark.root


def _propagation(path: Path) -> str:
    out = subprocess.run(["findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", str(path)],
                         capture_output=True, text=True, check=False, timeout=30)
    return out.stdout.strip()


def test_the_root_directory_becomes_an_rshared_mount_and_goes_again(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mount)")
    root = tmp_path / "kubelet"
    assert make_rshared(root) is True
    try:
        assert _propagation(root) == "shared"
        volume = root / "pods" / "uid" / "volumes" / "kubernetes.io~empty-dir" / "state"
        volume.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume)], check=True, timeout=30)
        try:
            assert _propagation(volume) == "shared"
            assert make_rshared(root) is False  # already shared: nothing more to do
        finally:
            subprocess.run(["umount", str(volume)], check=True, timeout=30)
    finally:
        undo_rshared(root)
    assert _propagation(root) == ""
