"""Disk hotplug pieces on the host: the sans-IO QMP core, the QMP client against a real QEMU (a
paused microvm with PCIe root ports: blockdev-add + device_add land where the pod VM's PCI path
says), and the shim's check of a bundle's ``linux.devices`` (only a real block node of the
number containerd put there is ever attached)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from guest.protocols import oci_pb2
from runtime.devices import block_devices, host_block_device
from runtime.errors import InvalidInputError
from runtime.podvm import HOTPLUG_SLOTS, HotpluggedDisk
from runtime.qmp import (
    MAX_LINE,
    QmpClient,
    QmpCommandError,
    QmpConnection,
    QmpEvent,
    QmpGreeting,
    QmpProtocolError,
    QmpReply,
)

GREETING = b'{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": ["oob"]}}\r\n'


def test_qmp_core_greeting_command_reply_and_events() -> None:
    c = QmpConnection()
    with pytest.raises(QmpProtocolError, match="before QEMU's greeting"):
        c.command("qmp_capabilities")
    (g,) = c.receive_data(GREETING)
    assert isinstance(g, QmpGreeting) and g.capabilities == ["oob"]
    cid, data = c.command("device_add", {"driver": "virtio-blk-pci", "id": "d0"})
    assert json.loads(data) == {"execute": "device_add", "id": cid, "arguments": {"driver": "virtio-blk-pci",
                                                                                   "id": "d0"}}
    assert data.endswith(b"\r\n")
    reply = json.dumps({"return": {}, "id": cid}).encode()
    event = b'{"event": "DEVICE_DELETED", "data": {"device": "d0"}, "timestamp": {}}\n'
    msgs = c.receive_data(event + reply[:5])
    assert msgs == [QmpEvent("DEVICE_DELETED", {"device": "d0"})]
    assert c.receive_data(reply[5:] + b"\n") == [QmpReply(cid, {})]
    cid2, _ = c.command("blockdev-del", {"node-name": "x"})
    error = {"error": {"class": "GenericError", "desc": "busy"}, "id": cid2}
    (err,) = c.receive_data(json.dumps(error).encode() + b"\n")
    assert isinstance(err, QmpReply) and not err.ok and err.desc == "busy"


@pytest.mark.parametrize("line", [
    b'{"return": {}, "id": 99}\n',  # an id never sent
    b'[1, 2]\n',
    b'not json\n',
    GREETING,  # a second greeting
    b'{"return": {}}\n',  # no id
])
def test_qmp_core_refuses_what_is_not_qmp(line: bytes) -> None:
    c = QmpConnection()
    c.receive_data(GREETING)
    c.command("query-status")
    with pytest.raises(QmpProtocolError):
        c.receive_data(line)


def test_qmp_core_refuses_an_endless_line() -> None:
    c = QmpConnection()
    with pytest.raises(QmpProtocolError, match="longer than"):
        c.receive_data(b"{" + b" " * (MAX_LINE + 1))


def test_qmp_client_hotplugs_a_disk_onto_a_root_port_of_a_real_qemu(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed")
    sock = tmp_path / "qmp.sock"
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    argv = ["qemu-system-x86_64", "-M", "microvm,pcie=on,acpi=on", "-accel", "tcg", "-S", "-nodefaults",
            "-nographic", "-no-user-config", "-qmp", f"unix:{sock},server=on,wait=off"]
    for i in range(HOTPLUG_SLOTS):
        argv += ["-device", f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},slot={i},addr={0x10 + i:#x}"]
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=quiet, stdout=quiet, stderr=quiet)

    async def go() -> tuple[list[int], str]:
        client = QmpClient()
        await client.connect(sock, within=60)
        try:
            disk_id = HotpluggedDisk.for_slot(1)
            await client.execute("blockdev-add", {"driver": "raw", "node-name": disk_id.node,
                                                  "file": {"driver": "file", "filename": str(disk)}})
            await client.execute("device_add", {"driver": "virtio-blk-pci", "id": disk_id.device,
                                                "drive": disk_id.node, "bus": "rp1", "addr": "0x0"})
            with pytest.raises(QmpCommandError, match=r"GenericError|DeviceNotFound"):
                await client.execute("device_add", {"driver": "virtio-blk-pci", "id": "x", "drive": "nope",
                                                    "bus": "rp2"})
            pci = await client.execute("query-pci")
            slots = [d["slot"] for d in pci[0]["devices"]]
            addr = await client.execute("qom-get", {"path": f"/machine/peripheral/{disk_id.device}",
                                                    "property": "addr"})
            # the root port has one slot: a second disk on it is refused, so the first one is there
            await client.execute("blockdev-add", {"driver": "raw", "node-name": "second",
                                                  "file": {"driver": "file", "filename": str(disk),
                                                           "read-only": True}, "read-only": True})
            with pytest.raises(QmpCommandError):
                await client.execute("device_add", {"driver": "virtio-blk-pci", "id": "d2", "drive": "second",
                                                    "bus": "rp1", "addr": "0x0"})
            return slots, f"11/{int(addr) >> 3:02x}"
        finally:
            await client.close()

    try:
        slots, found = asyncio.run(go())
    finally:
        proc.kill()
        proc.wait(10)
    assert [0x10 + i for i in range(HOTPLUG_SLOTS)] == sorted(s for s in slots if s >= 0x10)
    # the disk is in slot 0 behind root port 0x11: Kata's PCI path "11/00"
    assert found == HotpluggedDisk.for_slot(1).pci_path == "11/00"


def _entry(path: str, kind: str, major: int, minor: int) -> oci_pb2.LinuxDevice:
    return oci_pb2.LinuxDevice(Path=path, Type=kind, Major=major, Minor=minor)


@pytest.fixture
def loop(tmp_path: Path) -> tuple[str, int, int]:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(1 << 20))
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True,
                         check=True).stdout.strip()
    rdev = os.stat(dev).st_rdev
    yield dev, os.major(rdev), os.minor(rdev)  # type: ignore[misc]
    subprocess.run(["losetup", "-d", dev], check=False)


def test_the_shim_attaches_the_block_node_containerd_named(loop: tuple[str, int, int]) -> None:
    dev, major, minor = loop
    found = host_block_device(_entry("/dev/xvda", "b", major, minor))
    assert (str(found.host_path), found.container_path) == (dev, "/dev/xvda")


def test_a_device_that_is_not_a_block_device_is_never_attached(loop: tuple[str, int, int],
                                                               tmp_path: Path) -> None:
    _, major, minor = loop
    # /dev/null's number declared as a block device, a character device, a number no disk has
    for entry in (_entry("/dev/xvda", "b", 1, 3), _entry("/dev/xvda", "c", 1, 3),
                  _entry("/dev/xvda", "b", 4095, 1048575), _entry("/dev/xvda", "b", -1, 0)):
        with pytest.raises(InvalidInputError):
            host_block_device(entry)
    # the kernel's name for the number resolved in a /dev where that name is a regular disk file or a
    # symbolic link to one: refused (a host path outside what containerd gave is never opened)
    fake_dev = tmp_path / "dev"
    fake_dev.mkdir()
    name = Path(loop[0]).name
    (fake_dev / name).write_bytes(bytes(4096))
    with pytest.raises(InvalidInputError, match="a block node"):
        host_block_device(_entry("/dev/xvda", "b", major, minor), dev=fake_dev)
    (fake_dev / name).unlink()
    (fake_dev / name).symlink_to(loop[0])
    with pytest.raises(InvalidInputError, match="a block node"):
        host_block_device(_entry("/dev/xvda", "b", major, minor), dev=fake_dev)


@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/../etc/x", "dev/xvda", "/dev/", "/dev/a b"])
def test_a_device_path_outside_dev_is_refused(loop: tuple[str, int, int], path: str) -> None:
    with pytest.raises(InvalidInputError, match="a path under /dev"):
        host_block_device(_entry(path, "b", loop[1], loop[2]))


def test_too_many_or_repeated_devices_are_refused_before_anything_is_attached(
    loop: tuple[str, int, int],
) -> None:
    spec = oci_pb2.Spec(Linux=oci_pb2.Linux(Devices=[_entry("/dev/xvda", "b", loop[1], loop[2])] * 2))
    with pytest.raises(InvalidInputError, match="each path once"):
        block_devices(spec)
    many = [_entry(f"/dev/xvd{c}", "b", loop[1], loop[2]) for c in "abcde"]
    with pytest.raises(InvalidInputError, match="at most"):
        block_devices(oci_pb2.Spec(Linux=oci_pb2.Linux(Devices=many)))
    chars_only = oci_pb2.Spec(Linux=oci_pb2.Linux(Devices=[_entry("/dev/fuse", "c", 10, 229)]))
    assert block_devices(chars_only) == []
