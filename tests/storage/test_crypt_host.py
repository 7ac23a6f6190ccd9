"""Host side of guest/storage/crypt.py and encrypted.py: key derivation, option parsing, device nodes,
refusals that happen before any device or tool is touched."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guest.storage.crypt import (
    KEY_BYTES,
    EncryptedVolumeError,
    key_from_workload_secret,
    mapper_name,
    open_volume,
)
from guest.storage.encrypted import parse_block_driver_options
from guest.storage.errors import StorageOptionError, StorageSourceError
from guest.storage.source import BlockDevice, block_device_at


def test_key_is_the_same_for_the_same_workload_and_differs_otherwise() -> None:
    a = key_from_workload_secret(b"\1" * 64)
    assert a == key_from_workload_secret(b"\1" * 64) and len(a) == KEY_BYTES
    assert a != key_from_workload_secret(b"\2" + b"\1" * 63)
    assert a != key_from_workload_secret(b"\1" * 64, "image-store")


@pytest.mark.parametrize("secret", [b"", b"\1" * 31])
def test_short_secret_is_refused(secret: bytes) -> None:
    with pytest.raises(EncryptedVolumeError, match="at least 32"):
        key_from_workload_secret(secret)


def test_mapper_name_is_contrasts() -> None:
    # hex of SHA-256("/dev/csi0" + "/state")[:8]
    assert mapper_name("/dev/csi0", "/state") == "7bfcd783e98dd63a"
    assert len(mapper_name("/dev/csi0", "/state")) == 16
    assert mapper_name("/dev/csi0", "/state") != mapper_name("/dev/csi1", "/state")


@pytest.mark.parametrize("name", ["", "UPPER", "a b", "a/b", "-x", "x" * 49, "a\nb", "a;rm"])
def test_bad_volume_names_are_refused_before_anything(name: str) -> None:
    with pytest.raises(EncryptedVolumeError, match="volume name"):
        open_volume(BlockDevice("vdb", 254, 16), name, bytes(KEY_BYTES))


def test_wrong_key_length_is_refused() -> None:
    with pytest.raises(EncryptedVolumeError, match="96"):
        open_volume(BlockDevice("vdb", 254, 16), "ok", bytes(32))


def test_driver_options() -> None:
    o = parse_block_driver_options(["encryption_key=ephemeral", "create_filesystem"])
    assert o.encrypted and o.create_filesystem
    assert not parse_block_driver_options(["create_filesystem"]).encrypted
    for bad in (["encryption_key=ephemeral", "encryption_key=ephemeral"], ["encryption_key=kbs://x"], ["x"]):
        with pytest.raises(StorageOptionError):
            parse_block_driver_options(bad)


@given(st.lists(st.text(max_size=30), max_size=4))
def test_driver_options_never_accept_unknown(options: list[str]) -> None:
    try:
        parse_block_driver_options(options)
    except StorageOptionError:
        return
    assert set(options) <= {"encryption_key=ephemeral", "create_filesystem"}
    assert len(set(options)) == len(options)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_block_device_at(tmp_path: Path) -> None:
    real = next((p for p in sorted(Path("/dev").glob("loop[0-9]")) if p.is_block_device()), None)
    if real is None:
        pytest.skip("no loop device node here")
    rdev = os.stat(real).st_rdev
    node = tmp_path / "csi0"
    os.mknod(node, stat.S_IFBLK | 0o600, rdev)
    dev = block_device_at(node)
    assert dev.name == real.name and (dev.major, dev.minor) == (os.major(rdev), os.minor(rdev))
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "file").write_bytes(b"")
    os.mknod(tmp_path / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(tmp_path / "nodev", stat.S_IFBLK | 0o600, os.makedev(4000, 4000))
    for bad in ("link", "file", "chr", "nodev", "missing"):
        with pytest.raises(StorageSourceError):
            block_device_at(tmp_path / bad)


def test_superblock_blocks_are_mke2fs_backup_locations() -> None:
    """The blocks zeroed before mke2fs on an unwiped volume: block 0 and the sparse_super backups
    mke2fs lists for 4 KiB blocks ("Superblock backups stored on blocks: 32768, 98304, ...")."""
    from guest.storage.crypt import superblock_blocks

    assert superblock_blocks(48 << 20) == [0]
    assert superblock_blocks(100 << 30) == [0, 32768, 98304, 163840, 229376, 294912, 819200, 884736,
                                            1605632, 2654208, 4096000, 7962624, 11239424, 20480000,
                                            23887872]
