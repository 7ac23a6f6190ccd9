"""Encrypted block storages of a pod: kata's block-encrypted emptyDir and the secure image store.

genpolicy's ``emptydir_mode = block-encrypted`` gives each emptyDir a block device storage whose
``driver_options`` are ``encryption_key=ephemeral`` and ``create_filesystem`` (the policy pins both,
so a host cannot ask for the same volume in plaintext). The key is random, born in the VM and never
written anywhere: the device is formatted afresh every time and its data is unreadable once the
VM is gone. The secure image store is the same kind of volume mounted where pulled layers are
unpacked, so images need not fit in (encrypted) RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .crypt import DEFAULT_SETTINGS, CryptSettings, CryptVolume, ephemeral_key, open_volume
from .errors import StorageOptionError
from .source import BlockDevice

__all__ = [
    "CREATE_FILESYSTEM", "EPHEMERAL_KEY", "IMAGE_STORE_ANNOTATION", "IMAGE_STORE_MOUNT",
    "IMAGE_STORE_PCI_PATH", "BlockStorageOptions", "image_store_storage", "open_ephemeral_volume",
    "open_image_store", "parse_block_driver_options",
]

EPHEMERAL_KEY = "encryption_key=ephemeral"
CREATE_FILESYSTEM = "create_filesystem"
_KNOWN = (EPHEMERAL_KEY, CREATE_FILESYSTEM)
# The secure image store as a CreateSandbox storage: the pod asks with Contrast's annotation, the
# runtime hotplugs a scratch disk as the pod VM's first hotplugged disk (so its PCI path is known
# when the policy is generated) and the policy pins this exact storage, encryption included.
IMAGE_STORE_ANNOTATION = "contrast.edgeless.systems/image-store-size"
IMAGE_STORE_MOUNT = "/run/kata-containers/image-store"
IMAGE_STORE_PCI_PATH = "10/00"


def image_store_storage() -> dict[str, object]:
    """The storage's fields (agent Storage names) that differ from the protobuf defaults."""
    return {"driver": "blk", "driver_options": [EPHEMERAL_KEY, CREATE_FILESYSTEM],
            "source": IMAGE_STORE_PCI_PATH, "fstype": "ext4", "mount_point": IMAGE_STORE_MOUNT}


@dataclass(frozen=True, slots=True)
class BlockStorageOptions:
    encrypted: bool
    create_filesystem: bool


def parse_block_driver_options(options: Sequence[str]) -> BlockStorageOptions:
    """kata's block storage ``driver_options``; unknown or repeated ones are refused."""
    seen: set[str] = set()
    for opt in options:
        if opt not in _KNOWN:
            raise StorageOptionError("driver_options", opt, f"one of {list(_KNOWN)}")
        if opt in seen:
            raise StorageOptionError("driver_options", opt, "each option once")
        seen.add(opt)
    return BlockStorageOptions(EPHEMERAL_KEY in seen, CREATE_FILESYSTEM in seen)


def open_ephemeral_volume(device: BlockDevice, mount_point: Path, *,
                          settings: CryptSettings = DEFAULT_SETTINGS) -> CryptVolume:
    """Format ``device`` with a fresh random key, create ext4 and mount it at ``mount_point``."""
    return open_volume(device, f"ephemeral-{device.name}", ephemeral_key(), mount_point=mount_point,
                       fresh=True, settings=settings)


def open_image_store(device: BlockDevice, store_dir: Path, *,
                     settings: CryptSettings = DEFAULT_SETTINGS) -> CryptVolume:
    """The secure image store: an ephemeral volume at ``store_dir`` (where pulled layers go)."""
    return open_volume(device, "image-store", ephemeral_key(), mount_point=store_dir, fresh=True,
                       settings=settings)
