"""Inside the pod VM (the shared boot): encrypted volumes on loop devices over tmpfs files.

The backing file plays the host's disk: what the test reads from it is what the host would see.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest.backend.errors import InvalidRequestError
from guest.backend.layout import Layout
from guest.backend.storages import Storages
from guest.protocols import agent_pb2
from guest.storage import DeviceMapper, Target, resolve_source
from guest.storage.crypt import (
    EncryptedVolumeError,
    VolumeKeyError,
    key_from_workload_secret,
    open_volume,
)
from guest.storage.encrypted import open_image_store
from tests.storage.luks_forge import forge_null_keyslot

pytestmark = [pytest.mark.vm(guest=True), pytest.mark.encrypted_storage]

SIZE = 48 << 20
MARKER = b"EMPTYDIR-PLAINTEXT " * 64


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    backing = Path("/tmp") / f"crypt-{os.getpid()}-{tmp_path.name}.img"
    with open(backing, "wb") as f:
        f.truncate(SIZE)
    dev = subprocess.run(["losetup", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["losetup", dev, str(backing)], check=True)
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink()


def _mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def _drop_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _mappings() -> list[str]:
    return sorted(n for n in DeviceMapper().list_devices() if n != "dm-verity")


def _emptydir(source: str, driver_options: list[str]) -> agent_pb2.Storage:
    mount_point = "/run/kata-containers/sandbox/storage/" + base64.urlsafe_b64encode(source.encode()).decode()
    return agent_pb2.Storage(driver="mmioblk", driver_options=driver_options, source=source, fstype="ext4",
                             mount_point=mount_point)


async def test_encrypted_emptydir_key_is_born_in_the_vm_and_data_dies_with_it(
        loop: tuple[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    dev, backing = loop
    caplog.set_level(logging.DEBUG)
    storages = Storages(Layout(), pinned_layers=list)
    s = _emptydir(dev, ["encryption_key=ephemeral", "create_filesystem"])
    mounted, rootfs = await storages.mount_container("c1", [s], sandbox_container=False)
    assert rootfs is None
    path = mounted[0].mount_point
    (path / "data").write_bytes(MARKER)
    # a shared mount: a Bidirectional mount a container makes under it reaches the pod's others
    (line,) = [x for x in _mountinfo() if x.split()[4] == str(path)]
    assert " shared:" in line, line
    # A second container naming the same emptyDir shares the mounted volume.
    mounted2, _ = await storages.mount_container("c2", [s], sandbox_container=False)
    assert (mounted2[0].mount_point / "data").read_bytes() == MARKER
    name = f"ephemeral-{dev.removeprefix('/dev/')}"
    crypt = DeviceMapper().table(name)[0].params.split()
    assert crypt[0] == "capi:authenc(hmac(sha256),xts(aes))-plain64"
    assert crypt[1].startswith(":") and ":logon:" in crypt[1]  # the key sits in the kernel keyring
    os.sync()
    mounted2[0].release()
    mounted[0].release()
    # An emptyDir lives as long as its pod: containers gone, the volume stays open until the sandbox ends.
    assert (path / "data").read_bytes() == MARKER
    storages.release_pod_volumes()
    assert _mappings() == []
    raw = backing.read_bytes()
    assert raw[:6] == b"LUKS\xba\xbe" and MARKER[:19] not in raw
    assert "EMPTYDIR" not in caplog.text
    # The next pod's emptyDir on the same device is a new volume: the old key is gone with the old one.
    mounted, _ = await storages.mount_container("c3", [s], sandbox_container=False)
    assert not (mounted[0].mount_point / "data").exists()
    assert os.stat(mounted[0].mount_point).st_mode & 0o7777 == 0o777  # as kubelet makes an emptyDir
    storages.release_pod_volumes()
    assert _mappings() == []


async def test_an_unwiped_ephemeral_volume_fails_reads_of_never_written_sectors(
        loop: tuple[str, Path]) -> None:
    """Ephemeral volumes are formatted without wiping (cost independent of size, the host file stays
    sparse): a sector never written has no valid tag, so reading it raw fails, never returns zeros;
    what ext4 wrote reads back, and the host's file grew only by what was written."""
    dev, backing = loop
    storages = Storages(Layout(), pinned_layers=list)
    s = _emptydir(dev, ["encryption_key=ephemeral", "create_filesystem"])
    mounted, _ = await storages.mount_container("c1", [s], sandbox_container=False)
    try:
        payload = os.urandom(4 << 20)
        (mounted[0].mount_point / "blob").write_bytes(payload)
        os.sync()
        _drop_caches()
        assert (mounted[0].mount_point / "blob").read_bytes() == payload
        allocated = os.stat(backing).st_blocks * 512
        assert allocated < SIZE // 2, f"{allocated} bytes of the {SIZE}-byte disk written: wiped?"
        fd = os.open(f"/dev/mapper/ephemeral-{dev.removeprefix('/dev/')}", os.O_RDONLY | os.O_DIRECT)
        try:
            import mmap

            size = os.lseek(fd, 0, os.SEEK_END)
            buf = mmap.mmap(-1, 4096)
            # three quarters in: not ext4 metadata (mke2fs zeroes only the very end) nor our 4 MiB
            with pytest.raises(OSError):
                os.preadv(fd, [buf], (size * 3 // 4) // 4096 * 4096)
        finally:
            os.close(fd)
    finally:
        storages.release_pod_volumes()
    assert _mappings() == []


async def test_a_disk_the_guest_already_uses_is_never_formatted(loop: tuple[str, Path]) -> None:
    """The host names, as an emptyDir's disk, one the guest holds (here: a device-mapper table over
    it, as for a verity layer or another volume): refused before cryptsetup runs, nothing written."""
    dev, backing = loop
    dm = DeviceMapper()
    sectors = SIZE // 512
    number = resolve_source(dev).number
    dm.create("held-by-test", [Target(0, sectors, "linear", f"{number} 0")])
    try:
        storages = Storages(Layout(), pinned_layers=list)
        s = _emptydir(dev, ["encryption_key=ephemeral", "create_filesystem"])
        with pytest.raises(Exception, match="held by dm-"):
            await storages.mount_container("c1", [s], sandbox_container=False)
    finally:
        dm.remove("held-by-test")
    assert backing.read_bytes() == bytes(SIZE)


async def test_two_containers_asking_at_once_share_one_emptydir_volume(loop: tuple[str, Path]) -> None:
    dev, _backing = loop
    storages = Storages(Layout(), pinned_layers=list)
    s = _emptydir(dev, ["encryption_key=ephemeral", "create_filesystem"])
    (m1, _), (m2, _) = await asyncio.gather(storages.mount_container("c1", [s], sandbox_container=False),
                                            storages.mount_container("c2", [s], sandbox_container=False))
    assert m1[0].mount_point == m2[0].mount_point
    (m1[0].mount_point / "x").write_bytes(b"shared")
    assert (m2[0].mount_point / "x").read_bytes() == b"shared"
    assert _mappings() == sorted([f"ephemeral-{dev.removeprefix('/dev/')}",
                                  f"ephemeral-{dev.removeprefix('/dev/')}_dif"])
    m1[0].release()
    m2[0].release()
    storages.release_pod_volumes()
    assert _mappings() == []


@pytest.mark.parametrize("driver_options", [
    ["create_filesystem"], [], ["encryption_key=ephemeral"], ["encryption_key=host", "create_filesystem"],
    ["encryption_key=ephemeral", "create_filesystem", "create_filesystem"],
])
async def test_block_storage_without_an_ephemeral_key_is_refused(loop: tuple[str, Path],
                                                                 driver_options: list[str]) -> None:
    dev, backing = loop
    storages = Storages(Layout(), pinned_layers=list)
    with pytest.raises(Exception) as e:
        await storages.mount_container("c1", [_emptydir(dev, driver_options)], sandbox_container=False)
    assert isinstance(e.value, InvalidRequestError) or "driver_options" in str(e.value)
    assert _mappings() == []
    assert backing.read_bytes() == bytes(SIZE), "a refused request wrote to the device"


def test_secure_image_store_is_an_encrypted_volume(loop: tuple[str, Path], tmp_path: Path) -> None:
    dev, backing = loop
    vol = open_image_store(resolve_source(dev), tmp_path / "store")
    try:
        (tmp_path / "store" / "layer.tar").write_bytes(MARKER)
        assert os.stat(tmp_path / "store").st_dev == os.stat(vol.mapper).st_rdev
    finally:
        vol.close()
    assert MARKER[:19] not in backing.read_bytes()


def _pipe(data: bytes) -> int:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def _luks_format(dev: str, *extra: str, volume_key: bytes | None = None, passphrase: bytes = b"host") -> None:
    argv = ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
            "--pbkdf-force-iterations", "1000", "--key-file=-", *extra]
    fds: tuple[int, ...] = ()
    if volume_key is not None:
        fds = (_pipe(volume_key),)
        argv.append(f"--volume-key-file=/proc/self/fd/{fds[0]}")
    try:
        subprocess.run([*argv, dev], input=passphrase, check=True, capture_output=True, pass_fds=fds,
                       env={"PATH": "/usr/sbin:/usr/bin", "DM_DISABLE_UDEV": "1"})
    finally:
        for fd in fds:
            os.close(fd)


def test_a_volume_keyed_right_but_without_integrity_is_refused(loop: tuple[str, Path]) -> None:
    dev, backing = loop
    key = key_from_workload_secret(b"\7" * 64)
    # Our volume key's first 64 bytes as a plain aes-xts volume key: it opens, but the table is wrong.
    _luks_format(dev, "--cipher", "aes-xts-plain64", "--key-size", "512", volume_key=key[:64])
    before = hashlib.sha256(backing.read_bytes()).digest()
    with pytest.raises(EncryptedVolumeError, match="expected mappings"):
        open_volume(resolve_source(dev), "nointegrity", key)
    assert _mappings() == []
    assert hashlib.sha256(backing.read_bytes()).digest() == before


def test_a_damaged_luks_header_is_never_reformatted(loop: tuple[str, Path]) -> None:
    dev, backing = loop
    key = key_from_workload_secret(b"\7" * 64)
    vol = open_volume(resolve_source(dev), "damaged", key)
    vol.close()
    with open(backing, "r+b") as f:  # both LUKS2 headers' JSON areas, the primary's magic kept
        for off in (4096, 16384 + 4096):
            f.seek(off)
            f.write(b"\xff" * 4096)
    before = hashlib.sha256(backing.read_bytes()).digest()
    with pytest.raises(EncryptedVolumeError):  # whoever notices (cryptsetup or our magic check)
        open_volume(resolve_source(dev), "damaged", key)
    assert _mappings() == []
    assert hashlib.sha256(backing.read_bytes()).digest() == before


def test_a_forged_header_whose_keyslot_opens_with_any_passphrase_is_refused(loop: tuple[str, Path]) -> None:
    """The host formats the device itself (the right cipher and MAC, a volume key it knows) and
    rewrites keyslot 0 as cipher_null, which cryptsetup before 2.8.1 unlocks with any passphrase
    (Debian 12's 2.6.1-4~deb12u2 refuses such keyslots itself: "Cannot use cipher_null-ecb cipher
    for keyslot encryption"). Our open does not depend on that: it gives our own volume key, which
    the header's digest does not match: refused, nothing written."""
    dev, backing = loop
    env = {"PATH": "/usr/sbin:/usr/bin", "DM_DISABLE_UDEV": "1"}
    host_key = os.urandom(96)
    _luks_format(dev, "--cipher", "aes-xts-plain64", "--key-size", "512", "--integrity", "hmac-sha256",
                 "--integrity-no-wipe", "--sector-size", "4096", volume_key=host_key)
    forge_null_keyslot(Path(dev), host_key)
    anyone = subprocess.run(["cryptsetup", "open", "--type", "luks2", "--key-file=-", dev, "forged-probe"],
                            input=key_from_workload_secret(b"\7" * 64), capture_output=True, env=env)
    if anyone.returncode == 0:  # an affected cryptsetup: the passphrase path took the host's key
        subprocess.run(["cryptsetup", "close", "forged-probe"], check=True, env=env)
    else:
        assert b"cipher_null" in anyone.stderr, anyone.stderr
    before = hashlib.sha256(backing.read_bytes()).digest()
    with pytest.raises(VolumeKeyError):
        open_volume(resolve_source(dev), "forged", key_from_workload_secret(b"\7" * 64))
    assert _mappings() == []
    assert hashlib.sha256(backing.read_bytes()).digest() == before
