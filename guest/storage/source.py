"""A storage's ``source`` (host-supplied) resolved to a block device the kernel itself names.

The string is never written into a device-mapper table. It must be the canonical path of a device
node, ``/dev/<name>`` with ``<name>`` from a short list of kernel block device names
(:data:`SOURCE_PATTERN`, which ``erofs_layers.rego`` repeats so the policy refuses what we
refuse). The device number then comes from the kernel (``/sys/class/block/<name>/dev``), and the
``/dev`` entry must be that very device: a block node (``lstat``, so never a symbolic link) whose
number equals the kernel's. Only the resulting :class:`BlockDevice` (name and major:minor, both
checked on construction) can be given to the table builder.

Which of the allowed devices the host names does not weaken the layer: dm-verity checks every
block read against the pinned root hash, whatever device holds it. What must not happen is the
host choosing the table's words, and that is what this module prevents.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import StorageSourceError

__all__ = ["DEV", "SOURCE_PATTERN", "SYS_CLASS_BLOCK", "BlockDevice", "block_device_at", "check_unused",
           "resolve_source"]

# virtio-blk and SCSI disks (optionally a partition), loop devices. The same text is in
# erofs_layers.rego (erofs_source_pattern); a test keeps them equal.
SOURCE_PATTERN = r"^/dev/((vd|sd)[a-z]{1,2}([1-9][0-9]?)?|loop(0|[1-9][0-9]{0,2}))$"
_SOURCE = re.compile(SOURCE_PATTERN)
_NAME = re.compile(r"((vd|sd)[a-z]{1,2}([1-9][0-9]?)?|loop(0|[1-9][0-9]{0,2}))")
_DEV_NUMBER = re.compile(r"(0|[1-9][0-9]{0,6}):(0|[1-9][0-9]{0,6})\n?")
DEV = Path("/dev")
SYS_CLASS_BLOCK = Path("/sys/class/block")
_MAX_MAJOR = (1 << 12) - 1  # the kernel's dev_t: 12-bit major, 20-bit minor
_MAX_MINOR = (1 << 20) - 1


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """A block device by its kernel name and number; nothing else can be built."""

    name: str
    major: int
    minor: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"block device name {self.name!r}: expected one matching {_NAME.pattern}")
        for what, value, top in (("major", self.major, _MAX_MAJOR), ("minor", self.minor, _MAX_MINOR)):
            if type(value) is not int or not 0 <= value <= top:
                raise ValueError(f"block device {what} {value!r}: expected an integer from 0 to {top}")

    @property
    def number(self) -> str:
        """``major:minor``, the form the device-mapper table takes a device in."""
        return f"{self.major}:{self.minor}"


def resolve_source(source: str, *, dev: Path = DEV, sys_class_block: Path = SYS_CLASS_BLOCK) -> BlockDevice:
    """The block device ``source`` names; StorageSourceError (nothing touched) if it is not one.

    ``dev`` and ``sys_class_block`` are parameters only so a host test can point them elsewhere.
    """
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise StorageSourceError(source, "not an allowed device path", f"a path matching {SOURCE_PATTERN}")
    name = source[len("/dev/"):]
    try:
        number = (sys_class_block / name / "dev").read_text(encoding="ascii")
    except FileNotFoundError:
        raise StorageSourceError(source, f"the kernel has no block device {name!r}",
                                 "an existing block device") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StorageSourceError(source, f"reading the kernel's device number: {e}",
                                 "an existing block device") from e
    m = _DEV_NUMBER.fullmatch(number)
    if m is None:
        raise StorageSourceError(source, f"the kernel's device number {number!r} does not parse",
                                 "major:minor")
    try:
        device = BlockDevice(name, int(m.group(1)), int(m.group(2)))
    except ValueError as e:
        raise StorageSourceError(source, f"the kernel's device number {number!r}: {e}",
                                 "major:minor") from None
    try:
        st = os.lstat(dev / name)
    except OSError as e:
        raise StorageSourceError(source, f"the device node is missing: {e.strerror}",
                                 f"a block node for {device.number}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StorageSourceError(source, "the device node is a symbolic link",
                                 f"a block node for {device.number}")
    if not stat.S_ISBLK(st.st_mode):
        raise StorageSourceError(source, f"not a block device (mode {stat.filemode(st.st_mode)})",
                                 f"a block node for {device.number}")
    if st.st_rdev != os.makedev(device.major, device.minor):
        got = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        raise StorageSourceError(source, f"the node is device {got}, the kernel's {name} is {device.number}",
                                 f"a block node for {device.number}")
    return device


def block_device_at(node: Path, *, sys_dev_block: Path = Path("/sys/dev/block"),
                    dev: Path = DEV, sys_class_block: Path = SYS_CLASS_BLOCK) -> BlockDevice:
    """The block device behind the node ``node`` (e.g. a pod's volumeDevice ``/dev/csi0``).

    The node must be a block node (``lstat``: never a symbolic link); the kernel names the device
    by its number (``/sys/dev/block/<major:minor>/uevent``), and that name is then resolved like a
    storage source, so the result is the kernel's ``/dev/<name>`` with the same number.
    """
    try:
        st = os.lstat(node)
    except OSError as e:
        raise StorageSourceError(str(node), f"the device node is missing: {e.strerror}",
                                 "a block node") from None
    if not stat.S_ISBLK(st.st_mode):
        raise StorageSourceError(str(node), f"not a block device (mode {stat.filemode(st.st_mode)})",
                                 "a block node")
    number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    try:
        uevent = (sys_dev_block / number / "uevent").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise StorageSourceError(str(node), f"the kernel has no block device {number}: {e}",
                                 "an existing block device") from None
    names = [line[len("DEVNAME="):] for line in uevent.splitlines() if line.startswith("DEVNAME=")]
    if len(names) != 1:
        raise StorageSourceError(str(node), f"device {number} has no single kernel name", "DEVNAME=<name>")
    device = resolve_source(f"/dev/{names[0]}", dev=dev, sys_class_block=sys_class_block)
    if device.number != number:
        raise StorageSourceError(str(node), f"node is {number}, /dev/{names[0]} is {device.number}",
                                 "the same device")
    return device


def check_unused(device: BlockDevice, *, sys_class_block: Path = SYS_CLASS_BLOCK,
                 mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
    """StorageSourceError unless nothing holds ``device`` or any of its partitions: no device-mapper
    table over it (``holders``) and no mount of it. A disk the host names for a new volume must not
    be one the guest already uses (its root, a verity layer, the image store, another volume), or
    formatting it would destroy that one."""
    base = sys_class_block / device.name
    numbers = {device.number}
    names = [device.name]
    try:
        children = sorted(base.iterdir())
    except OSError as e:
        raise StorageSourceError(f"/dev/{device.name}", f"reading its sysfs entry: {e.strerror}",
                                 "a block device the kernel lists") from None
    for child in children:
        if child.name.startswith(device.name) and (child / "partition").is_file():
            names.append(child.name)
            with contextlib.suppress(OSError, UnicodeDecodeError):
                numbers.add((child / "dev").read_text(encoding="ascii").strip())
    for name in names:
        holders_dir = (base if name == device.name else base / name) / "holders"
        try:
            holders = sorted(h.name for h in holders_dir.iterdir())
        except FileNotFoundError:
            holders = []
        except OSError as e:
            raise StorageSourceError(f"/dev/{device.name}", f"reading {name}'s holders: {e.strerror}",
                                     "a device nothing holds") from None
        if holders:
            raise StorageSourceError(f"/dev/{device.name}", f"{name} is held by {', '.join(holders)}",
                                     "a device nothing holds (not the guest's own disks or volumes)")
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise StorageSourceError(f"/dev/{device.name}", f"reading {mountinfo}: {e.strerror}",
                                 "a readable mount table") from None
    for line in lines:
        fields = line.split(" ", 4)
        if len(fields) > 3 and fields[2] in numbers:
            where = fields[4].split(" ", 1)[0]
            raise StorageSourceError(f"/dev/{device.name}", f"device {fields[2]} is mounted at {where}",
                                     "a device that is not mounted")
