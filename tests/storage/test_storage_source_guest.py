"""Inside the pod VM: a hostile storage ``source`` never reaches the dm-verity table.

The host controls ``Storage.source``. Each case below builds, as root in the guest, the filesystem
objects a hostile source needs to get past a path check (directories whose names carry verity
arguments, swapped /dev nodes, symlinks) and then asks for the pinned layer with that source. Every
one must be refused with a :class:`StorageSourceError` naming the source, leave no dm device and no
mount; the honest source must give a live table (DM_TABLE_STATUS and ``dmsetup table``) equal to
the one built from the pinned parameters and the device number the agent resolved.

The attack the first case reproduces: a source ``"/dev/loopH /dev/loopH 4096 4096 N N sha256
<host root> - 0"`` (a path whose last component links to the host's device) used to be written into
the table as is, so the kernel took the host's device and root hash and ignored the pinned values
after the ``0`` (an empty optional-argument group); the "pinned" mount then served the host's bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from guest.storage import (
    DeviceMapper,
    StorageSourceError,
    VerityParams,
    mount_layer_storage,
    resolve_source,
    verity_table,
)
from image import verity
from tests.storage.make_layer import HELLO, LAYER, ORACLE, blob

pytestmark = pytest.mark.vm(guest=True)

SALT = "5a" * 32
HOST_SALT = "c3" * 32


@dataclass(frozen=True)
class Attached:
    device: Path  # /dev/loopN
    params: VerityParams
    blob: bytes

    def options(self) -> list[str]:
        p = self.params
        return ["ro", "X-kata.dmverity-enabled=true", f"X-kata.dmverity.roothash={p.root_hash}",
                f"X-kata.dmverity.hashoffset={p.hash_offset}", f"X-kata.dmverity.salt={p.salt}",
                "X-kata.dmverity.no-superblock=true"]

    def pin(self) -> dict[str, str]:
        p = self.params
        return {"roothash": p.root_hash, "hashoffset": str(p.hash_offset), "salt": p.salt,
                "no-superblock": "true"}


@dataclass(frozen=True)
class Setup:
    pinned: Attached  # the owner's layer, pinned in the policy
    host: Attached  # a layer the host made: other bytes, its own (valid) verity tree
    spare: Path  # a loop node nobody uses, whose /dev entry the attacks may replace


def _layer(tmp: Path, name: str, salt: str, tamper: bool) -> tuple[Path, VerityParams, bytes]:
    img = tmp / f"{name}.img"
    shutil.copyfile(LAYER, img)
    content = blob()
    if tamper:  # the host's version of blob.bin (uncompressed erofs stores it verbatim)
        data = bytearray(img.read_bytes())
        at = data.find(content[32768:32800])
        assert at > 0
        data[at:at + 16] = b"HOST-SUPPLIED!!!"
        img.write_bytes(bytes(data))
        content = content[:32768] + b"HOST-SUPPLIED!!!" + content[32768 + 16:]
    size = img.stat().st_size
    tree = verity.format_hash_tree(img, img, verity.VerityParams(
        salt=bytes.fromhex(salt), superblock=False, data_blocks=size // 4096, hash_offset=size))
    params = VerityParams(root_hash=tree.root_hash.hex(), salt=salt, hash_offset=size, superblock=False)
    return img, params, content


def _losetup(path: Path) -> Path:
    dev = subprocess.run(["losetup", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["losetup", "-r", dev, str(path)], check=True)
    return Path(dev)


def _unused_loop(exclude: set[str]) -> Path:
    """The highest-numbered loop device the kernel knows (sysfs) with nothing attached."""
    names = sorted((p.name for p in Path("/sys/class/block").glob("loop*")),
                   key=lambda n: int(n[4:]), reverse=True)
    for name in names:
        if name not in exclude and not Path(f"/sys/class/block/{name}/loop").exists():
            return Path("/dev") / name
    pytest.skip("no unused loop device")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("source")
    attached: list[Path] = []
    try:
        made = []
        for name, salt, tamper in (("pinned", SALT, False), ("host", HOST_SALT, True)):
            img, params, content = _layer(tmp, name, salt, tamper)
            dev = _losetup(img)
            attached.append(dev)
            made.append(Attached(dev, params, content))
        spare = _unused_loop({d.name for d in attached})
        yield Setup(made[0], made[1], spare)
    finally:
        for dev in attached:
            subprocess.run(["losetup", "-d", str(dev)], check=False)


@pytest.fixture
def dm() -> DeviceMapper:
    return DeviceMapper()


def _mounts() -> str:
    return Path("/proc/self/mounts").read_text()


def _verity_path_source(setup: Setup, sep: str, tail: str) -> str:
    """A path whose name is a verity argument list naming the host's device and root hash."""
    h = setup.host.device
    p = setup.host.params
    return f"{h}{sep}{h} 4096 4096 {p.data_blocks} {p.data_blocks} sha256 {p.root_hash} {p.salt}{tail}"


@contextmanager
def _path_to(source: str, target: Path) -> Iterator[None]:
    """Create ``source`` as a symlink to ``target`` (its directories too), remove it afterwards."""
    path = Path(source)
    created: list[Path] = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    try:
        assert path.is_block_device()  # what the old `source.is_block_device()` check accepted
        yield
    finally:
        path.unlink()
        for d in created:
            d.rmdir()


@contextmanager
def _replaced_node(node: Path, make: Callable[[Path], object]) -> Iterator[None]:
    """Swap the /dev entry ``node`` for something else; the original block node comes back after."""
    st = os.lstat(node)
    assert stat.S_ISBLK(st.st_mode)
    node.unlink()
    try:
        make(node)
        yield
    finally:
        if node.is_symlink() or node.exists():
            node.unlink()
        os.mknod(node, stat.S_IFBLK | stat.S_IMODE(st.st_mode), st.st_rdev)


def _refused(setup: Setup, dm: DeviceMapper, tmp: Path, source: str) -> StorageSourceError:
    before_dm, before_mounts = dm.list_devices(), _mounts()
    mnt = tmp / "mnt"
    with pytest.raises(StorageSourceError) as e:
        mount_layer_storage("erofs.multi-layer", source, setup.pinned.options(), mnt, [setup.pinned.pin()],
                            dm=dm)
    assert e.value.source == source
    assert repr(source) in str(e.value)  # the log shows exactly what the host sent, escaped
    assert dm.list_devices() == before_dm, "a dm device was left behind"
    assert _mounts() == before_mounts
    assert not mnt.exists() or not os.path.ismount(mnt)
    return e.value


def test_verity_arguments_in_a_path_with_spaces_are_refused(setup: Setup, dm: DeviceMapper,
                                                             tmp_path: Path) -> None:
    source = _verity_path_source(setup, " ", " 0 /h")
    with _path_to(source, setup.host.device):
        err = _refused(setup, dm, tmp_path, source)
    assert "/dev/" in err.expected


def test_verity_arguments_after_a_newline_are_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    source = _verity_path_source(setup, "\n", "\n0\n/h")
    with _path_to(source, setup.host.device):
        _refused(setup, dm, tmp_path, source)


def test_extra_verity_feature_arguments_are_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    # The pinned device, then optional arguments that would switch verification off.
    source = f"{setup.pinned.device} 1 ignore_corruption"
    with _path_to(source, setup.pinned.device):
        _refused(setup, dm, tmp_path, source)


@pytest.mark.parametrize("source", ["/dev/../dev/{pinned}", "/dev/./{pinned}", "/dev//{pinned}",
                                    "/dev/{pinned}/", "/dev/{pinned}\0", "/dev/{pinned}\n",
                                    " /dev/{pinned}", "dev/{pinned}", "/dev/vdzz9", "/dev/loop00"])
def test_non_canonical_and_absent_sources_are_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path,
                                                      source: str) -> None:
    _refused(setup, dm, tmp_path, source.format(pinned=setup.pinned.device.name))


def test_symlink_to_another_device_is_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    with _replaced_node(setup.spare, lambda n: n.symlink_to(setup.host.device)):
        err = _refused(setup, dm, tmp_path, str(setup.spare))
    assert "symbolic link" in err.reason


def test_symlink_even_to_the_pinned_device_is_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    with _replaced_node(setup.spare, lambda n: n.symlink_to(setup.pinned.device)):
        _refused(setup, dm, tmp_path, str(setup.spare))


def test_node_with_another_device_number_is_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    host_rdev = os.stat(setup.host.device).st_rdev
    with _replaced_node(setup.spare, lambda n: os.mknod(n, stat.S_IFBLK | 0o600, host_rdev)):
        err = _refused(setup, dm, tmp_path, str(setup.spare))
    assert f"{os.major(host_rdev)}:{os.minor(host_rdev)}" in err.reason


def test_regular_file_is_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    with _replaced_node(setup.spare, lambda n: n.write_bytes(setup.host.device.name.encode())):
        err = _refused(setup, dm, tmp_path, str(setup.spare))
    assert "not a block device" in err.reason


def test_character_device_is_refused(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    null = os.stat("/dev/null").st_rdev
    with _replaced_node(setup.spare, lambda n: os.mknod(n, stat.S_IFCHR | 0o600, null)):
        _refused(setup, dm, tmp_path, str(setup.spare))


def _oracle(*args: str) -> str:
    proc = subprocess.run([str(ORACLE), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_honest_source_gives_exactly_the_pinned_table(setup: Setup, dm: DeviceMapper, tmp_path: Path) -> None:
    before = dm.list_devices()
    rdev = os.stat(setup.pinned.device).st_rdev
    m = mount_layer_storage("erofs.multi-layer", str(setup.pinned.device), setup.pinned.options(),
                            tmp_path / "mnt", [setup.pinned.pin()], dm=dm)
    try:
        device = resolve_source(str(setup.pinned.device))
        assert (device.major, device.minor) == (os.major(rdev), os.minor(rdev))
        expected = verity_table(setup.pinned.params, device)
        assert dm.table(m.device.name) == [expected]
        majmin = f"{os.major(rdev)}:{os.minor(rdev)}"
        text = _oracle("dmsetup", "table", m.device.name).split()
        assert text == ["0", str(expected.length), "verity", "1", majmin, majmin, "4096", "4096",
                        str(setup.pinned.params.data_blocks), str(setup.pinned.params.data_blocks), "sha256",
                        setup.pinned.params.root_hash, SALT]
        assert (tmp_path / "mnt" / "hello.txt").read_bytes() == HELLO
        got = (tmp_path / "mnt" / "blob.bin").read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(setup.pinned.blob).digest()
        assert setup.pinned.blob != setup.host.blob
    finally:
        m.close(dm)
    assert dm.list_devices() == before
