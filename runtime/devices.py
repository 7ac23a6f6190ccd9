"""A container's block devices (CRI ``devices``, Kubernetes volumeDevices) on the host side.

containerd puts each device into the bundle spec's ``linux.devices`` with the host node's type and
number (``path`` there is where the *container* sees it). Like Kata's runtime, the shim takes only
the number from the spec and asks the kernel which node that is (``/sys/dev/block/M:m/uevent``
``DEVNAME``); the node must be a block node (``lstat``: no symbolic link) with that very number.
So a bundle cannot name a host file or path to attach: only a block device that exists, the one
containerd put there. The disk is then hotplugged into the pod VM (runtime.podvm) and given to the
agent as Kata does: ``Device{type: "blk", vm_path: <PCI path>, container_path}``.

Character devices in ``linux.devices`` are not passed (the guest builds its own ``/dev``; a
confidential pod gets no host character devices), and are logged.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from guest.protocols import oci_pb2

from .errors import InvalidInputError

__all__ = ["MAX_IMAGE_STORE", "HostBlockDevice", "block_devices", "host_block_device", "image_store_size"]

SYS_DEV_BLOCK = Path("/sys/dev/block")
DEV = Path("/dev")
_DEVNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?")
_CONTAINER_PATH = re.compile(r"/dev/[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,3}")
MAX_DEVICES = 4  # one per hotplug root port
MAX_IMAGE_STORE = 1 << 40
_QUANTITY = re.compile(r"(0|[1-9][0-9]{0,6})(Mi|Gi|Ti)?")
_UNITS = {"Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


@dataclass(frozen=True, slots=True)
class HostBlockDevice:
    host_path: Path
    container_path: str
    major: int
    minor: int


def host_block_device(entry: oci_pb2.LinuxDevice, *, sys_dev_block: Path = SYS_DEV_BLOCK,
                      dev: Path = DEV) -> HostBlockDevice:
    """The host block node behind one ``linux.devices`` entry; InvalidInputError naming the entry."""
    what = f"linux.devices {entry.Path!r}"
    if not _CONTAINER_PATH.fullmatch(entry.Path) or ".." in entry.Path.split("/"):
        raise InvalidInputError(f"{what} path", entry.Path, "a path under /dev")
    if entry.Type != "b":
        raise InvalidInputError(f"{what} type", entry.Type, "b (a block device)")
    number = f"{entry.Major}:{entry.Minor}"
    if not (0 <= entry.Major < 1 << 12 and 0 <= entry.Minor < 1 << 20):
        raise InvalidInputError(f"{what} device number", number, "major < 4096, minor < 2^20")
    try:
        uevent = (sys_dev_block / number / "uevent").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise InvalidInputError(f"{what} device number", number, "a block device of this host") from None
    names = [line[len("DEVNAME="):] for line in uevent.splitlines() if line.startswith("DEVNAME=")]
    if len(names) != 1 or not _DEVNAME.fullmatch(names[0]):
        raise InvalidInputError(f"{what} device {number} name", names, "one kernel device name")
    node = dev / names[0]
    try:
        st = os.lstat(node)
    except OSError as e:
        raise InvalidInputError(f"{what} node", str(node), f"an existing block node ({e.strerror})") from None
    if not stat.S_ISBLK(st.st_mode) or st.st_rdev != os.makedev(entry.Major, entry.Minor):
        raise InvalidInputError(f"{what} node", str(node), f"a block node with number {number}")
    return HostBlockDevice(node, entry.Path, entry.Major, entry.Minor)


def block_devices(spec: oci_pb2.Spec) -> list[HostBlockDevice]:
    """Every block device of the spec, each checked (nothing is attached if one is refused)."""
    entries = [d for d in spec.Linux.Devices if d.Type == "b"]
    if len(entries) > MAX_DEVICES:
        raise InvalidInputError("linux.devices", f"{len(entries)} block devices", f"at most {MAX_DEVICES}")
    out = [host_block_device(d) for d in entries]
    if len({d.container_path for d in out}) != len(out):
        raise InvalidInputError("linux.devices", [d.container_path for d in out], "each path once")
    return out


def image_store_size(value: str) -> int:
    """The image store's size from Contrast's ``image-store-size`` annotation (a Kubernetes quantity
    in Mi/Gi/Ti; ``0`` = none), in bytes."""
    m = _QUANTITY.fullmatch(value)
    if m is None or (m.group(1) != "0" and m.group(2) is None):
        raise InvalidInputError("annotation contrast.edgeless.systems/image-store-size", value,
                                "0 or a size such as 512Mi, 10Gi")
    size = int(m.group(1)) * _UNITS.get(m.group(2) or "Mi", 1)
    if size > MAX_IMAGE_STORE or (size and size < 64 << 20):
        raise InvalidInputError("annotation contrast.edgeless.systems/image-store-size", value,
                                "between 64Mi and 1Ti")
    return size
