"""Verity-protected, read-only mounts with exactly the parameters the policy pinned.

``VerityParams`` is the parameter set Kata's agent takes for a layer (``X-kata.dmverity.*``):
root hash, salt, hash algorithm, hash type, data/hash block sizes, hash offset (the tree is
appended to the layer at that byte offset) and whether a cryptsetup superblock precedes the tree.
:func:`check_pinned` compares a request with the policy field by field; :func:`open_verity`
builds the kernel table from the *pinned* values and a :class:`~.source.BlockDevice` (the device
number the agent resolved, see :mod:`.source`), so no string of the request reaches the kernel.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .dm import DeviceMapper, MappedDevice, Target
from .errors import DeviceMapperError, PolicyDeniedError, StorageError, StorageOptionError
from .mount import MS_NODEV, MS_NOSUID, MS_RDONLY, mount, umount
from .source import BlockDevice

__all__ = ["ALGORITHMS", "VerityMount", "VerityParams", "check_pinned", "close_verity", "device_name",
           "mount_verity", "open_verity", "verity_table"]

ALGORITHMS = {"sha1": 20, "sha256": 32, "sha512": 64}
_HEX = re.compile(r"[0-9a-f]*")
_TABLE_WORD = re.compile(r"[0-9a-z:-]+")
_TABLE_WORDS = 10  # version, data dev, hash dev, 2 block sizes, data blocks, hash start, alg, root, salt
_SB_SIZE = 512


@dataclass(frozen=True, slots=True)
class VerityParams:
    root_hash: str
    salt: str  # lowercase hex, "" for none
    hash_offset: int
    algorithm: str = "sha256"
    hash_type: int = 1
    data_block_size: int = 4096
    hash_block_size: int = 4096
    superblock: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise StorageOptionError("algorithm", self.algorithm, f"one of {sorted(ALGORITHMS)}")
        if len(self.root_hash) != 2 * ALGORITHMS[self.algorithm] or not _HEX.fullmatch(self.root_hash):
            raise StorageOptionError("roothash", self.root_hash,
                                     f"{2 * ALGORITHMS[self.algorithm]} lowercase hex digits")
        if len(self.salt) > 512 or len(self.salt) % 2 or not _HEX.fullmatch(self.salt):
            raise StorageOptionError("salt", self.salt, "lowercase hex of at most 256 bytes")
        if self.hash_type not in (0, 1):
            raise StorageOptionError("hashtype", str(self.hash_type), "0 or 1")
        for what, size in (("blocksize", self.data_block_size), ("hashsize", self.hash_block_size)):
            if size < 512 or size > 65536 or size & (size - 1):
                raise StorageOptionError(what, str(size), "a power of two from 512 to 65536")
        if (self.hash_offset <= 0 or self.hash_offset >= 2**63 or self.hash_offset % self.data_block_size
                or self.hash_offset % self.hash_block_size):
            raise StorageOptionError("hashoffset", str(self.hash_offset),
                                     "a positive multiple of the data and hash block sizes")

    @property
    def data_blocks(self) -> int:
        return self.hash_offset // self.data_block_size

    @property
    def hash_start_block(self) -> int:
        # Kata: hash_offset / hash size, plus the superblock block when one precedes the tree.
        skip = -(-_SB_SIZE // self.hash_block_size) if self.superblock else 0
        return self.hash_offset // self.hash_block_size + skip


def check_pinned(requested: VerityParams, pinned: VerityParams) -> None:
    """PolicyDeniedError unless every field of the request equals the pinned one."""
    req, pin = asdict(requested), asdict(pinned)
    mismatches = {k: (req[k], pin[k]) for k in pin if req[k] != pin[k]}
    if mismatches:
        raise PolicyDeniedError(mismatches)


def verity_table(params: VerityParams, device: BlockDevice) -> Target:
    """The dm-verity target for ``params`` over ``device`` (data and tree on the same device).

    Every word comes from a validated value; the table is checked to be exactly the ten words of
    a verity target without optional arguments before it can reach the kernel.
    """
    if not isinstance(params, VerityParams) or not isinstance(device, BlockDevice):
        raise TypeError("verity_table takes VerityParams and a resolved BlockDevice")
    sectors = params.data_blocks * params.data_block_size // 512
    words = [str(params.hash_type), device.number, device.number, str(params.data_block_size),
             str(params.hash_block_size), str(params.data_blocks), str(params.hash_start_block),
             params.algorithm, params.root_hash, params.salt or "-"]
    args = " ".join(words)
    if len(args.split()) != _TABLE_WORDS or not all(_TABLE_WORD.fullmatch(w) for w in words):
        raise StorageError(f"verity table {args!r}: expected {_TABLE_WORDS} words of [0-9a-z:-]")
    return Target(0, sectors, "verity", args)


def device_name(device: BlockDevice, params: VerityParams) -> str:
    """Kata's naming, kata-verity-<device>-off<offset>-<first 32 hex of the root>, from the
    kernel's device name (never the request's string)."""
    return f"kata-verity-{device.name}-off{params.hash_offset}-{params.root_hash[:32]}"


def open_verity(device: BlockDevice, requested: VerityParams, pinned: VerityParams,
                dm: DeviceMapper | None = None) -> MappedDevice:
    """Map ``device`` through dm-verity (read-only) after checking the request against the policy."""
    check_pinned(requested, pinned)
    dm = dm or DeviceMapper()
    name = device_name(device, pinned)
    mapped = dm.create(name, [verity_table(pinned, device)], readonly=True)
    # Mount only a node that is provably ours: the number the kernel returned must carry our name.
    deadline = time.monotonic() + 5
    while True:
        node_ok = mapped.path.is_block_device() and os.stat(mapped.path).st_rdev == os.makedev(
            mapped.major, mapped.minor)
        if node_ok and mapped.sysfs_name() == name:
            return mapped
        if time.monotonic() > deadline:  # devtmpfs creates the node asynchronously
            with contextlib.suppress(DeviceMapperError):
                dm.remove(name)
            raise StorageError(f"{mapped.path} did not appear as {name} ({mapped.major}:{mapped.minor})")
        time.sleep(0.005)


def close_verity(name: str, dm: DeviceMapper | None = None) -> None:
    (dm or DeviceMapper()).remove(name)


@dataclass(frozen=True, slots=True)
class VerityMount:
    device: MappedDevice
    mount_point: Path

    def close(self, dm: DeviceMapper | None = None) -> None:
        umount(self.mount_point)
        close_verity(self.device.name, dm)


def mount_verity(device: BlockDevice, requested: VerityParams, pinned: VerityParams, mount_point: Path,
                 fstype: str = "erofs", dm: DeviceMapper | None = None) -> VerityMount:
    """Verity device + read-only mount; on any failure nothing stays mapped or mounted."""
    dm = dm or DeviceMapper()
    mapped = open_verity(device, requested, pinned, dm)
    try:
        mount_point.mkdir(parents=True, exist_ok=True)
        mount(str(mapped.path), mount_point, fstype, MS_RDONLY | MS_NOSUID | MS_NODEV)
    except BaseException:
        with contextlib.suppress(DeviceMapperError):
            dm.remove(mapped.name)
        raise
    return VerityMount(mapped, mount_point)
