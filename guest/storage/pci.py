"""A hotplugged disk found by its Kata PCI path, never by a host-supplied device name.

Kata's runtime names a hotplugged virtio-blk disk by its PCI path: the slot of each bridge from
the root bus down, then the device's slot, in hex (``10/00`` = the device in slot 0 behind the
root port in slot 0x10 of bus 0). The guest walks sysfs from the root complex along those slots
(``/sys/devices/pci0000:00/0000:00:10.0/0000:<bus>:00.0``), takes the block device the kernel
created under that PCI function and resolves it with :func:`.source.resolve_source`, so the
result is the kernel's own name and number. The host chooses only which slot; it cannot make the
guest open a device by a path or name it wrote.

Hotplug is asynchronous (pciehp probes the slot, virtio_blk registers the disk after QMP has
answered), so :func:`block_device_for_pci_path` waits for it with a deadline.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .errors import StorageSourceError
from .source import DEV, SYS_CLASS_BLOCK, BlockDevice, resolve_source

__all__ = ["PCI_PATH_PATTERN", "SYS_DEVICES", "block_device_for_pci_path", "parse_pci_path"]

# At least two slots: the root bus holds the guest's own disks (root image, initdata, layers on q35),
# never a container's or a storage's; hotplugged disks are always behind a root port.
PCI_PATH_PATTERN = r"^[0-9a-f]{2}(/[0-9a-f]{2}){1,3}$"
_PCI_PATH = re.compile(PCI_PATH_PATTERN)
_ROOT_BUS_SLOT = re.compile(r"[0-9a-f]{2}")
_FUNCTION = re.compile(r"0000:([0-9a-f]{2}):([0-9a-f]{2})\.0")
_VIRTIO = re.compile(r"virtio[0-9]{1,4}")
SYS_DEVICES = Path("/sys/devices")
ROOT_BUS = "pci0000:00"
_MAX_SLOT = 0x1F


def parse_pci_path(pci_path: str) -> tuple[int, ...]:
    """The slots of a Kata PCI path; StorageSourceError if it is not one."""
    if not isinstance(pci_path, str) or not _PCI_PATH.fullmatch(pci_path):
        if isinstance(pci_path, str) and _ROOT_BUS_SLOT.fullmatch(pci_path):
            raise StorageSourceError(pci_path, "a device on the root bus", "a disk behind a root port: XX/YY")
        raise StorageSourceError(str(pci_path), "not a PCI path", f"slots in hex matching {PCI_PATH_PATTERN}")
    slots = tuple(int(part, 16) for part in pci_path.split("/"))
    if any(s > _MAX_SLOT for s in slots):
        raise StorageSourceError(pci_path, "a slot above 0x1f", "PCI slots 00..1f")
    return slots


def _function_dir(pci_path: str, slots: tuple[int, ...], sys_devices: Path) -> Path | None:
    """The sysfs directory of the PCI function at ``slots`` (None while it is not there yet)."""
    current = sys_devices / ROOT_BUS / f"0000:00:{slots[0]:02x}.0"
    for slot in slots[1:]:
        if not current.is_dir():
            return None
        found = []
        for child in current.iterdir():
            m = _FUNCTION.fullmatch(child.name)
            if m is not None and int(m.group(2), 16) == slot and not child.is_symlink():
                found.append(child)
        if len(found) > 1:
            raise StorageSourceError(pci_path, f"{len(found)} functions in slot {slot:02x} behind "
                                     f"{current.name}", "one device")
        if not found:
            return None
        current = found[0]
    return current if current.is_dir() else None


def _block_name(pci_path: str, function: Path) -> str | None:
    names: list[str] = []
    for virtio in function.iterdir():
        if not _VIRTIO.fullmatch(virtio.name) or not (virtio / "block").is_dir():
            continue
        names.extend(child.name for child in (virtio / "block").iterdir())
    if len(names) > 1:
        raise StorageSourceError(pci_path, f"{len(names)} block devices on one PCI function", "one disk")
    return names[0] if names else None


def block_device_for_pci_path(pci_path: str, *, timeout: float = 30.0, sys_devices: Path = SYS_DEVICES,
                              dev: Path = DEV, sys_class_block: Path = SYS_CLASS_BLOCK) -> BlockDevice:
    """The virtio disk at ``pci_path``, waiting up to ``timeout`` seconds for it to appear.

    ``sys_devices``/``dev``/``sys_class_block`` are parameters only so a host test can point them
    at a made-up tree.
    """
    slots = parse_pci_path(pci_path)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        function = _function_dir(pci_path, slots, sys_devices)
        name = _block_name(pci_path, function) if function is not None else None
        if name is not None:
            try:
                return resolve_source(f"/dev/{name}", dev=dev, sys_class_block=sys_class_block)
            except StorageSourceError:
                # devtmpfs creates the node right after the disk registers: give it the deadline
                if time.monotonic() > deadline:
                    raise
        if time.monotonic() > deadline:
            what = "no PCI function there" if function is None else "no block device on that function"
            raise StorageSourceError(pci_path, f"{what} after {timeout:.0f} s", "a hotplugged virtio disk")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
