"""CreateContainer ``devices``: hotplugged disks given to a container as block nodes (volumeDevices).

Kata's runtime sends one agent ``Device`` per volumeDevice: ``type`` ``blk`` (a virtio-blk-pci
disk), ``vm_path`` its PCI path, ``container_path`` where the container sees it. The guest finds
the disk by walking sysfs along the PCI path (guest/storage/pci.py: the kernel names the device,
the host's string is never used as a path), and the container gets a block node with the
*guest's* number at ``container_path`` — the spec's ``linux.devices`` from the host (host numbers)
are not used. Anything else (another type, options, a path outside ``/dev``, the same path twice)
is refused before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.protocols import agent_pb2
from guest.storage import BlockDevice, StorageError
from guest.storage.pci import block_device_for_pci_path, parse_pci_path

from .errors import InvalidRequestError, StorageFailedError

__all__ = ["ContainerDevice", "check_devices", "device_mapper_nodes", "resolve_devices", "spec_devices"]

BLK = "blk"
_CONTAINER_PATH = re.compile(r"/dev/[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,3}")
MAX_DEVICES = 16


@dataclass(frozen=True, slots=True)
class ContainerDevice:
    container_path: str
    device: BlockDevice


def check_devices(devices: Sequence[agent_pb2.Device]) -> None:
    """Refuse malformed device requests (no I/O, so before anything is created)."""
    if len(devices) > MAX_DEVICES:
        raise InvalidRequestError("devices", len(devices), f"at most {MAX_DEVICES}")
    seen: set[str] = set()
    for d in devices:
        if d.type != BLK:
            raise InvalidRequestError("device.type", d.type, "blk (a hotplugged virtio-blk-pci disk)")
        if not _CONTAINER_PATH.fullmatch(d.container_path) or ".." in d.container_path.split("/"):
            raise InvalidRequestError("device.container_path", d.container_path, "a path under /dev")
        if d.container_path in seen:
            raise InvalidRequestError("device.container_path", d.container_path, "each path once")
        seen.add(d.container_path)
        if list(d.options):
            raise InvalidRequestError("device.options", list(d.options), "no options")
        try:
            parse_pci_path(d.vm_path)
        except StorageError as e:
            raise InvalidRequestError("device.vm_path", d.vm_path, str(e)) from None


def resolve_devices(devices: Sequence[agent_pb2.Device], timeout: float = 30.0) -> list[ContainerDevice]:
    """Wait for each disk and resolve it (blocking: run it off the event loop)."""
    check_devices(devices)
    out = []
    for d in devices:
        try:
            device = block_device_for_pci_path(d.vm_path, timeout=timeout)
            out.append(ContainerDevice(d.container_path, device))
        except StorageError as e:
            raise StorageFailedError("device", d.container_path, str(e)) from e
    return out


def device_mapper_nodes(devices: Sequence[ContainerDevice], *,
                        sys_misc: Path = Path("/sys/class/misc/device-mapper/dev")) -> list[dict[str, Any]]:
    """For a privileged container given disks (the initializer opening a secure-pv volume, as in
    Contrast): the device-mapper control node, and each disk under its kernel name too, which the
    volume code resolves the container path to (it never trusts the name it was given)."""
    try:
        major, minor = (int(x) for x in sys_misc.read_text(encoding="ascii").strip().split(":"))
    except (OSError, ValueError) as e:
        raise StorageFailedError("device", "/dev/mapper/control",
                                 f"no device-mapper in this kernel: {e}") from e
    nodes = [{"path": "/dev/mapper/control", "type": "c", "major": major, "minor": minor, "fileMode": 0o600,
              "uid": 0, "gid": 0}]
    # The host picks the container paths: one naming the control node or another disk's kernel
    # name would put two different nodes at one path, and the volume code could open the wrong disk.
    taken = {d.container_path: d.device for d in devices}
    if "/dev/mapper/control" in taken:
        raise InvalidRequestError("device.container_path", "/dev/mapper/control",
                                  "a path other than the device-mapper control node")
    for d in devices:
        path = f"/dev/{d.device.name}"
        if path in taken:
            if taken[path] != d.device:
                raise InvalidRequestError("device.container_path", path,
                                          f"a path other than the kernel name of disk {d.device.number}")
            continue
        taken[path] = d.device
        nodes.append({"path": path, "type": "b", "major": d.device.major, "minor": d.device.minor,
                      "fileMode": 0o600, "uid": 0, "gid": 0})
    return nodes


def spec_devices(spec: dict[str, Any], devices: Sequence[ContainerDevice], *,
                 device_mapper: bool = False) -> None:
    """Add the nodes for ``devices`` to a config.json dict (the OCI runtime allows the devices it
    creates in the container's device cgroup)."""
    if not devices:
        return
    linux = spec.setdefault("linux", {})
    linux["devices"] = [
        {"path": d.container_path, "type": "b", "major": d.device.major, "minor": d.device.minor,
         "fileMode": 0o660, "uid": 0, "gid": 0}
        for d in devices
    ]
    if device_mapper:
        linux["devices"] += device_mapper_nodes(devices)
