"""Encrypted, integrity-protected block volumes: LUKS2 with dm-crypt over dm-integrity.

Every volume is ``aes-xts-plain64`` with a keyed MAC per 4 KiB sector (``hmac-sha256``, kept by
dm-integrity next to the data), so a sector the host altered, moved between volumes or made up
reads as EIO instead of garbage. HMAC over XTS rather than AEAD (``aes-gcm-random``): GCM's 96-bit
random nonce bounds one key to about 2^32 sector writes before a nonce repeat reveals the
authentication key, and a persistent volume keyed by a long-lived workload secret can reach that;
an HMAC tag has no such bound. The dm-integrity journal is on by default: without it a crash (or
the host killing the VM) between writing a sector and its tag leaves that sector unreadable.

The host writes the LUKS2 header, keyslots included. cryptsetup before 2.8.1 accepts a keyslot
encrypted with ``cipher_null``, which "opens" with any passphrase and hands over a volume key the
host chose. So the volume key itself is ours (derived or random) and is given to cryptsetup at
every open (``--volume-key-file``); cryptsetup checks it against the header's digest, which only
a holder of the key can have made, and never reads a keyslot. The keyslot (passphrase derived
from the volume key) exists for standard tools only. Keys are never on a command line, in the
environment or in a log: they travel through a pipe (``/proc/self/fd/N``) and stdin.

The device is a :class:`BlockDevice` resolved from the kernel, never a host string; the
device-mapper name is built here from hex digits.

A device without a LUKS header is formatted (first use). A device with one is only ever opened:
if the key does not open it, :class:`VolumeKeyError` and nothing is written. The header also
names the data cipher, so after opening the live device-mapper tables are checked to be exactly
the cipher and MAC above (a header with another cipher, ``cipher_null`` or no integrity is closed
and refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .dm import DeviceMapper
from .errors import DeviceMapperError, StorageError
from .mount import MS_NODEV, MS_NOSUID, mount, umount
from .source import BlockDevice

__all__ = [
    "CIPHER", "DEFAULT_SETTINGS", "INTEGRITY", "KEY_BYTES", "CryptSettings", "CryptVolume", "CryptsetupError",
    "EncryptedVolumeError", "VolumeKeyError", "close_volume", "ephemeral_key",
    "key_from_workload_secret", "mapper_name", "open_volume",
]

log = logging.getLogger("guest.storage")

CIPHER = "aes-xts-plain64"
INTEGRITY = "hmac-sha256"
KEY_BYTES = 96  # the volume key: 64 bytes for aes-xts-512 and 32 for hmac-sha256
SECTOR_SIZE = 4096
CRYPTSETUP = "cryptsetup"
MKFS_EXT4 = "mkfs.ext4"
# The live tables a correct volume has: dm-crypt with the authenc(hmac(sha256), xts(aes)) AEAD of
# 32-byte tags over a dm-integrity device with 32-byte tags and no internal hash (the MAC is dm-crypt's).
_CRYPT_CIPHER = "capi:authenc(hmac(sha256),xts(aes))-plain64"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
_EXT4_MAGIC_OFFSET = 1080
_EXT4_MAGIC = b"\x53\xef"
_LUKS_MAGIC = b"LUKS\xba\xbe"
_HKDF_INFO = b"confidential-guest/storage/luks2-volume-key/v1"
_KEYSLOT_INFO = b"confidential-guest/storage/luks2-keyslot-passphrase/v1"
DEFAULT_TIMEOUT = 600.0


class EncryptedVolumeError(StorageError):
    """The volume could not be opened or set up; nothing this call created is left behind."""


class VolumeKeyError(EncryptedVolumeError):
    """The device has a LUKS header that the key does not open: refused, never reformatted."""


class CryptsetupError(EncryptedVolumeError):
    """cryptsetup (or mkfs) exited non-zero; ``stderr`` is its message (it never contains the key)."""

    def __init__(self, action: str, returncode: int, stderr: str) -> None:
        self.action = action
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{action}: exit {returncode}: {stderr.strip()[-500:]}")


def key_from_workload_secret(secret: bytes, purpose: str = "secure-pv") -> bytes:
    """The volume key: HKDF-SHA256 of the workload secret, bound to ``purpose``.

    The same workload (same secret, any node, any restart) derives the same key; a workload with
    another secret cannot.
    """
    if len(secret) < 32:
        raise EncryptedVolumeError(f"workload secret has {len(secret)} bytes, expected at least 32")
    if not re.fullmatch(r"[a-z0-9-]{1,64}", purpose):
        raise EncryptedVolumeError(f"key purpose {purpose!r}: expected [a-z0-9-]{{1,64}}")
    info = _HKDF_INFO + b"\0" + purpose.encode()
    return _hkdf(secret, KEY_BYTES, info)


def _hkdf(key: bytes, length: int, info: bytes) -> bytes:
    # Imported here, not at module load: cryptography costs the agent's boot ~14 MiB and its import
    # time under TCG, and only pods with encrypted storage derive keys.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def ephemeral_key() -> bytes:
    """A random volume key born in the VM; it is never written anywhere, so the data dies with it."""
    return os.urandom(KEY_BYTES)


def mapper_name(device_path: str, mount_point: str) -> str:
    """Contrast's name: hex of the first 8 bytes of SHA-256(device path ‖ mount point)."""
    return hashlib.sha256((device_path + mount_point).encode()).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class CryptSettings:
    journal: bool = True  # dm-integrity journal: crash-safe data+tag writes, costs write bandwidth
    timeout: float = DEFAULT_TIMEOUT
    cryptsetup: str = CRYPTSETUP
    mkfs: str = MKFS_EXT4


@dataclass
class CryptVolume:
    """An open volume: ``/dev/mapper/<name>`` (checked to be the kernel's device) mounted or not."""

    name: str
    device: BlockDevice
    mapper: Path
    formatted: bool  # this call wrote a new LUKS header
    created_filesystem: bool
    mount_point: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def close(self, settings: CryptSettings | None = None) -> None:
        close_volume(self, settings or DEFAULT_SETTINGS)


DEFAULT_SETTINGS = CryptSettings()


def _env() -> dict[str, str]:
    # No udev in the pod VM: libdevmapper creates /dev/mapper nodes itself.
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DM_DISABLE_UDEV": "1", "LC_ALL": "C"}


def _run(argv: Sequence[str], action: str, settings: CryptSettings, *, key: bytes | None = None,
         volume_key: bytes | None = None, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv``; ``key`` goes to stdin, ``volume_key`` through a pipe named by the argument
    ``--volume-key-file=/proc/self/fd/N`` that this function inserts after the action."""
    fds: tuple[int, ...] = ()
    argv = list(argv)
    if volume_key is not None:
        r, w = os.pipe()
        try:
            os.write(w, volume_key)  # 96 bytes: far below a pipe's capacity
        finally:
            os.close(w)
        fds = (r,)
        argv.insert(2, f"--volume-key-file=/proc/self/fd/{r}")
    try:
        proc = subprocess.run(argv, input=key if key is not None else b"", capture_output=True,
                              env=_env(), timeout=settings.timeout, check=False, pass_fds=fds)
    except FileNotFoundError as e:
        raise EncryptedVolumeError(f"{action}: {argv[0]} is not installed ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise EncryptedVolumeError(f"{action}: no answer from {argv[0]} within {settings.timeout}s") from None
    finally:
        for fd in fds:
            os.close(fd)
    if proc.returncode not in ok:
        raise CryptsetupError(action, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def _device_path(device: BlockDevice) -> str:
    if not isinstance(device, BlockDevice):
        raise TypeError("encrypted volumes take a resolved BlockDevice")
    return f"/dev/{device.name}"


def _read_at(path: Path | str, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _has_luks_header(device: BlockDevice, settings: CryptSettings) -> bool:
    dev = _device_path(device)
    rc = _run([settings.cryptsetup, "isLuks", "--type", "luks2", dev], "checking for a LUKS2 header",
              settings, ok=(0, 1)).returncode
    if rc == 0:
        return True
    if _read_at(dev, 0, len(_LUKS_MAGIC)) == _LUKS_MAGIC:
        # A LUKS magic that cryptsetup does not accept as LUKS2 (damaged, or LUKS1): never format over it.
        raise EncryptedVolumeError(f"{dev} starts with a LUKS header that is not a usable LUKS2 header; "
                                   "refusing to format over it")
    return False


EXT4_BLOCK = 4096
EXT4_BLOCKS_PER_GROUP = 32768


def superblock_blocks(size: int) -> list[int]:
    """The blocks holding ext4 superblocks on a ``size``-byte device (4 KiB blocks, 32768 per group,
    sparse_super): block 0 and the first block of groups 1 and the powers of 3, 5 and 7. A superset
    (mke2fs may drop a short last group): zeroing one block too many costs nothing."""
    groups = -(-(size // EXT4_BLOCK) // EXT4_BLOCKS_PER_GROUP)
    chosen = {0, 1} if groups > 1 else {0}
    for base in (3, 5, 7):
        g = base
        while g < groups:
            chosen.add(g)
            g *= base
    return sorted(g * EXT4_BLOCKS_PER_GROUP for g in chosen)


def _zero_superblock_blocks(node: Path) -> None:
    zeros = bytes(EXT4_BLOCK)
    fd = os.open(node, os.O_WRONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        for block in superblock_blocks(size):
            os.pwrite(fd, zeros, block * EXT4_BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)


def _keyslot_passphrase(volume_key: bytes) -> bytes:
    return _hkdf(volume_key, 64, _KEYSLOT_INFO)


def _format(device: BlockDevice, key: bytes, settings: CryptSettings, *, wipe: bool = True) -> None:
    # Without the wipe no sector has a valid tag until written: a read of one fails (EILSEQ), it never
    # returns zeros or stale data. Only for a key born this moment, so no old sector can be valid.
    _run([settings.cryptsetup, "luksFormat", "--batch-mode", "--type", "luks2", "--cipher", CIPHER,
          "--key-size", "512", "--integrity", INTEGRITY, "--sector-size", str(SECTOR_SIZE),
          "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha256",
          *([] if wipe else ["--integrity-no-wipe"]),
          "--disable-external-tokens", "--key-file=-", _device_path(device)],
         "formatting LUKS2", settings, key=_keyslot_passphrase(key), volume_key=key)


def _open(device: BlockDevice, name: str, key: bytes, settings: CryptSettings) -> None:
    argv = [settings.cryptsetup, "open", "--type", "luks2", "--disable-external-tokens"]
    if not settings.journal:
        argv.append("--integrity-no-journal")
    try:
        _run([*argv, _device_path(device), name], "opening LUKS2", settings, volume_key=key)
    except CryptsetupError as e:
        if e.returncode == 2:  # cryptsetup: "Volume key does not match the volume."
            raise VolumeKeyError(f"{_device_path(device)}: the key does not open this volume's LUKS2 "
                                 "header (another workload's volume?); it is left as it is") from None
        raise


def _check_tables(name: str, device: BlockDevice, dm: DeviceMapper) -> Path:
    """The live tables are dm-crypt with our AEAD over dm-integrity over ``device``; the node."""
    devices = dm.list_devices()
    if name not in devices or f"{name}_dif" not in devices:
        raise EncryptedVolumeError(f"volume {name}: expected mappings {name} and {name}_dif, "
                                   f"the kernel has {sorted(d for d in devices if d.startswith(name))}")
    major, minor = devices[f"{name}_dif"]
    integrity = dm.table(f"{name}_dif")
    crypt = dm.table(name)
    # Only types and cipher words are compared and reported: the crypt table carries key material.
    if len(integrity) != 1 or integrity[0].type != "integrity":
        raise EncryptedVolumeError(f"volume {name}: integrity mapping has targets "
                                   f"{[t.type for t in integrity]}, expected one integrity target")
    iwords = integrity[0].params.split()
    if len(iwords) < 4 or iwords[0] != device.number or iwords[2] != "32" or iwords[3] not in ("J", "D"):
        raise EncryptedVolumeError(f"volume {name}: integrity target over {iwords[:1]} with tag size "
                                   f"{iwords[2:3]} mode {iwords[3:4]}, expected {device.number}, 32, J or D")
    if len(crypt) != 1 or crypt[0].type != "crypt":
        raise EncryptedVolumeError(f"volume {name}: crypt mapping has targets {[t.type for t in crypt]}, "
                                   "expected one crypt target")
    cwords = crypt[0].params.split()
    if len(cwords) < 5 or cwords[0] != _CRYPT_CIPHER or cwords[3] != f"{major}:{minor}":
        raise EncryptedVolumeError(f"volume {name}: crypt target cipher {cwords[:1]} over {cwords[3:4]}, "
                                   f"expected {_CRYPT_CIPHER} over {major}:{minor}")
    opts = cwords[5:]
    if "integrity:32:aead" not in opts or f"sector_size:{SECTOR_SIZE}" not in opts:
        raise EncryptedVolumeError(f"volume {name}: crypt options {[o for o in opts if ':' in o]}, "
                                   f"expected integrity:32:aead and sector_size:{SECTOR_SIZE}")
    cmajor, cminor = devices[name]
    # devtmpfs names it dm-N (the pod VM); in a container's /dev (a tmpfs, no devtmpfs) only the
    # node libdevmapper made under /dev/mapper exists. Either must be a block node of that number.
    for node in (Path(f"/dev/dm-{cminor}"), Path("/dev/mapper") / name):
        try:
            st = os.lstat(node)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise EncryptedVolumeError(f"volume {name}: {node}: {e.strerror}") from None
        if not stat.S_ISBLK(st.st_mode) or os.major(st.st_rdev) != cmajor or os.minor(st.st_rdev) != cminor:
            raise EncryptedVolumeError(f"volume {name}: {node} is not block device {cmajor}:{cminor}")
        return node
    raise EncryptedVolumeError(f"volume {name}: no node for device {cmajor}:{cminor} in /dev")


def _remove(name: str, settings: CryptSettings) -> None:
    try:
        _run([settings.cryptsetup, "close", name], "closing LUKS2", settings)
    except EncryptedVolumeError:
        dm = DeviceMapper()
        for n in (name, f"{name}_dif"):
            with contextlib.suppress(DeviceMapperError):
                dm.remove(n)


def open_volume(device: BlockDevice, name: str, key: bytes, *, mount_point: Path | None = None,
                create: bool = True, fresh: bool = False,
                settings: CryptSettings = DEFAULT_SETTINGS) -> CryptVolume:
    """Open (formatting on first use when ``create``) and optionally mount the volume on ``device``.

    ``fresh`` formats whatever the device holds (ephemeral volumes: their key was just born, so no
    earlier header can be theirs) without wiping it: formatting costs the same for a 64 MiB and a
    100 GiB disk, and a sparse disk file on the host stays sparse until written.

    Raises :class:`VolumeKeyError` for a volume the key does not open, :class:`EncryptedVolumeError`
    otherwise; on any failure the mappings this call made are removed.
    """
    if not _NAME.fullmatch(name):
        raise EncryptedVolumeError(f"volume name {name!r}: expected {_NAME.pattern}")
    if len(key) != KEY_BYTES:
        raise EncryptedVolumeError(f"volume key has {len(key)} bytes, expected {KEY_BYTES}")
    dm = DeviceMapper()
    if name in dm.list_devices():
        raise EncryptedVolumeError(f"volume {name}: a device-mapper device of that name exists already")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    formatted = False
    if fresh or not _has_luks_header(device, settings):
        if not create:
            raise EncryptedVolumeError(f"{_device_path(device)} has no LUKS2 header and formatting "
                                       "was not asked")
        _format(device, key, settings, wipe=not fresh)
        formatted = True
        timings["format"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    _open(device, name, key, settings)
    timings["open"] = time.perf_counter() - t1
    try:
        node = _check_tables(name, device, dm)
        created_fs = False
        # (A fresh, unwiped volume is not read: its sectors have no valid tags yet.)
        if fresh or _read_at(node, _EXT4_MAGIC_OFFSET, 2) != _EXT4_MAGIC:
            # Authenticated data without an ext4 superblock: a volume formatted by a holder of the key
            # that never got its filesystem (or a fresh one). Make it.
            t2 = time.perf_counter()
            argv = [settings.mkfs, "-q", "-F", "-E", "nodiscard"]
            if fresh:
                # Unwiped: mke2fs rewrites part of a block only for superblocks (and the sectors it
                # erases at the start), and a partial write reads the block first, which has no tag
                # yet; those blocks get zeros first. The layout is forced so they are known, and
                # nothing is zeroed that ext4 writes in full before reading anyway.
                _zero_superblock_blocks(node)
                argv = [settings.mkfs, "-q", "-F", "-b", str(EXT4_BLOCK), "-g", str(EXT4_BLOCKS_PER_GROUP),
                        "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"]
            _run([*argv, "-L", "secure-volume", str(node)], "creating ext4", settings)
            timings["mkfs"] = time.perf_counter() - t2
            created_fs = True
        vol = CryptVolume(name, device, node, formatted, created_fs, timings=timings)
        if mount_point is not None:
            mount_point.mkdir(parents=True, exist_ok=True)
            # A fresh volume's inode tables stay unwritten (ext4 never reads an unused one): no
            # background zeroing of gigabytes through dm-crypt, and the host's file stays sparse.
            mount(str(node), mount_point, "ext4", MS_NOSUID | MS_NODEV, "noinit_itable" if fresh else "")
            vol.mount_point = mount_point
    except BaseException:
        _remove(name, settings)
        raise
    timings["total"] = time.perf_counter() - t0
    log.info("event=volume_opened name=%s device=%s formatted=%s mkfs=%s journal=%s total_ms=%.0f", name,
             device.number, formatted, created_fs, settings.journal, timings["total"] * 1000)
    return vol


def close_volume(vol: CryptVolume, settings: CryptSettings = DEFAULT_SETTINGS) -> None:
    """Unmount (if mounted) and close both mappings."""
    if vol.mount_point is not None:
        umount(vol.mount_point)
        vol.mount_point = None
    _run([settings.cryptsetup, "close", vol.name], "closing LUKS2", settings)
    log.info("event=volume_closed name=%s", vol.name)
