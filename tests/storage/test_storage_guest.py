"""Inside the pod VM: verity-protected layer mounts through /dev/mapper/control.

Oracles: ``veritysetup open`` and ``dmsetup table`` (bundled in the test share, not the image)
on the same loop device; the layer is tests/storage/data/layer.erofs with a tree appended by
``image.verity``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from guest.storage import (
    DeviceMapper,
    PolicyDeniedError,
    StorageError,
    StorageOptionError,
    VerityParams,
    mount_verity,
    open_verity,
    resolve_source,
    verity_table,
)
from image import verity
from tests.storage.make_layer import HELLO, LAYER, ORACLE, blob

pytestmark = pytest.mark.vm(guest=True)

SALT = "5a" * 32
Layer = tuple[Path, VerityParams]


def _oracle(*args: str) -> str:
    proc = subprocess.run([str(ORACLE), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def _losetup(path: Path) -> Path:
    dev = subprocess.run(["losetup", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["losetup", "-r", dev, str(path)], check=True)
    return Path(dev)


def _make_layer(tmp: Path, *, superblock: bool, corrupt: bool = False) -> tuple[Path, VerityParams]:
    img = tmp / f"layer-{'sb' if superblock else 'nosb'}{'-bad' if corrupt else ''}.img"
    shutil.copyfile(LAYER, img)
    size = img.stat().st_size
    result = verity.format_hash_tree(img, img, verity.VerityParams(
        salt=bytes.fromhex(SALT), superblock=superblock, data_blocks=size // 4096, hash_offset=size))
    if corrupt:  # flip one byte in the middle of blob.bin (uncompressed erofs stores it verbatim)
        data = bytearray(img.read_bytes())
        at = data.find(blob()[32768:32800])
        assert at > 0
        data[at] ^= 0x01
        img.write_bytes(bytes(data))
    root = result.root_hash.hex()
    return img, VerityParams(root_hash=root, salt=SALT, hash_offset=size, superblock=superblock)


@pytest.fixture
def dm() -> DeviceMapper:
    return DeviceMapper()


@pytest.fixture(params=[False, True], ids=["no-superblock", "superblock"])
def layer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layer]:
    img, params = _make_layer(tmp_path, superblock=request.param)
    dev = _losetup(img)
    yield dev, params
    subprocess.run(["losetup", "-d", str(dev)], check=False)


def test_pinned_parameters_mount_read_only(layer: Layer, dm: DeviceMapper, tmp_path: Path) -> None:
    dev, params = layer
    mnt = tmp_path / "mnt"
    before = dm.list_devices()
    m = mount_verity(resolve_source(str(dev)), params, params, mnt, dm=dm)
    try:
        assert (mnt / "hello.txt").read_bytes() == HELLO
        assert hashlib.sha256((mnt / "blob.bin").read_bytes()).digest() == hashlib.sha256(blob()).digest()
        with pytest.raises(OSError) as e:
            (mnt / "new").write_bytes(b"x")
        assert e.value.errno == errno.EROFS
        expected = verity_table(params, resolve_source(str(dev)))
        assert dm.table(m.device.name) == [expected]
        assert set(dm.list_devices()) == set(before) | {m.device.name}
    finally:
        m.close(dm)
    assert dm.list_devices() == before
    assert not os.path.ismount(mnt)


def test_table_matches_veritysetup_open(layer: Layer, dm: DeviceMapper) -> None:
    dev, params = layer
    # veritysetup refuses a data device another mapping holds, so the oracle goes first.
    args = ["open", str(dev), "oracle", str(dev), params.root_hash, f"--salt={params.salt}",
            f"--hash-offset={params.hash_offset}"]
    if not params.superblock:
        args += ["--no-superblock", f"--data-blocks={params.data_blocks}"]
    _oracle("veritysetup", *args)
    try:
        theirs = dm.table("oracle")
        their_text = _oracle("dmsetup", "table", "oracle").split()
        their_bytes = Path(f"/dev/dm-{dm.list_devices()['oracle'][1]}").read_bytes()
    finally:
        _oracle("veritysetup", "close", "oracle")
    ours = open_verity(resolve_source(str(dev)), params, params, dm)
    try:
        assert dm.table(ours.name) == theirs
        assert _oracle("dmsetup", "table", ours.name).split() == their_text
        assert ours.path.read_bytes() == their_bytes
    finally:
        dm.remove(ours.name)


@pytest.mark.parametrize(("field", "value"), [
    ("root_hash", "00" * 32), ("salt", "00" * 32), ("salt", ""), ("hash_offset", 4096),
    ("data_block_size", 512), ("hash_block_size", 1024), ("hash_type", 0), ("superblock", None),
    ("algorithm", "sha512"),
])
def test_request_differing_from_policy_is_denied_and_leaves_nothing(
        layer: Layer, dm: DeviceMapper, tmp_path: Path, field: str, value: object) -> None:
    dev, pinned = layer
    changes: dict[str, object] = {field: value}
    if field == "superblock":
        changes[field] = not pinned.superblock
    if field == "algorithm":
        changes["root_hash"] = "ab" * 64
    requested = replace(pinned, **changes)  # type: ignore[arg-type]
    before = dm.list_devices()
    mnt = tmp_path / "denied"
    with pytest.raises(PolicyDeniedError) as e:
        mount_verity(resolve_source(str(dev)), requested, pinned, mnt, dm=dm)
    assert field in e.value.mismatches
    assert dm.list_devices() == before
    assert not os.path.ismount(mnt)


def test_wrong_pinned_hash_fails_mount_and_removes_device(layer: Layer, dm: DeviceMapper,
                                                           tmp_path: Path) -> None:
    dev, params = layer
    wrong = replace(params, root_hash=f"{int(params.root_hash, 16) ^ 1:064x}")
    before = dm.list_devices()
    with pytest.raises(StorageError):
        mount_verity(resolve_source(str(dev)), wrong, wrong, tmp_path / "mnt", dm=dm)
    assert dm.list_devices() == before
    assert not os.path.ismount(tmp_path / "mnt")


def test_corrupted_layer_reads_fail_with_eio(dm: DeviceMapper, tmp_path: Path) -> None:
    img, params = _make_layer(tmp_path, superblock=False, corrupt=True)
    dev = _losetup(img)
    try:
        m = mount_verity(resolve_source(str(dev)), params, params, tmp_path / "mnt", dm=dm)
        try:
            assert (tmp_path / "mnt" / "hello.txt").read_bytes() == HELLO  # untouched blocks still read
            with pytest.raises(OSError) as e:
                (tmp_path / "mnt" / "blob.bin").read_bytes()
            assert e.value.errno == errno.EIO
        finally:
            m.close(dm)
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)


def test_invalid_request_values_are_refused_before_any_device() -> None:
    with pytest.raises(StorageOptionError):
        VerityParams(root_hash="zz" * 32, salt="", hash_offset=4096)


def test_kata_layer_storage_options_mount(layer: Layer, dm: DeviceMapper, tmp_path: Path) -> None:
    from guest.storage import mount_layer_storage

    dev, p = layer
    options = ["ro", "X-kata.dmverity-enabled=true", f"X-kata.dmverity.roothash={p.root_hash}",
               f"X-kata.dmverity.hashoffset={p.hash_offset}", f"X-kata.dmverity.salt={p.salt}",
               f"X-kata.dmverity.no-superblock={'false' if p.superblock else 'true'}"]
    pin = {"roothash": p.root_hash, "hashoffset": str(p.hash_offset), "salt": p.salt,
           "no-superblock": "false" if p.superblock else "true"}
    before = dm.list_devices()
    m = mount_layer_storage("erofs.multi-layer", str(dev), options, tmp_path / "mnt", [pin], dm=dm)
    try:
        assert (tmp_path / "mnt" / "hello.txt").read_bytes() == HELLO
    finally:
        m.close(dm)
    with pytest.raises(PolicyDeniedError):
        mount_layer_storage("erofs.multi-layer", str(dev), options, tmp_path / "mnt2",
                            [{**pin, "salt": "00" * 32}], dm=dm)
    assert dm.list_devices() == before
