"""Host-side: a hotplugged disk found by its Kata PCI path (guest/storage/pci.py) and the
CreateContainer ``devices`` checks (guest/backend/devices.py), over a scratch sysfs tree with a real
device node (mknod) — the guest never opens a device by a name or path the host wrote."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from guest.backend.devices import ContainerDevice, check_devices, device_mapper_nodes, spec_devices
from guest.backend.errors import InvalidRequestError
from guest.protocols import agent_pb2
from guest.storage import BlockDevice, StorageSourceError
from guest.storage.pci import block_device_for_pci_path, parse_pci_path

MAJOR, MINOR = 254, 32


def _tree(tmp: Path, *, name: str = "vdc", slot: str = "10", node: bool = True) -> dict[str, Path]:
    sys_devices, sys_class_block, dev = tmp / "devices", tmp / "class-block", tmp / "dev"
    function = sys_devices / "pci0000:00" / f"0000:00:{slot}.0" / "0000:01:00.0"
    (function / "virtio3" / "block" / name).mkdir(parents=True)
    (sys_class_block / name).mkdir(parents=True)
    (sys_class_block / name / "dev").write_text(f"{MAJOR}:{MINOR}\n")
    dev.mkdir()
    if node:
        os.mknod(dev / name, stat.S_IFBLK | 0o600, os.makedev(MAJOR, MINOR))
    return {"sys_devices": sys_devices, "sys_class_block": sys_class_block, "dev": dev}


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a block node needs root")


def test_the_disk_behind_a_root_port_is_the_kernels_device(tmp_path: Path, root: None) -> None:
    paths = _tree(tmp_path)
    assert block_device_for_pci_path("10/00", timeout=1, **paths) == BlockDevice("vdc", MAJOR, MINOR)


def test_an_empty_slot_times_out_naming_what_is_missing(tmp_path: Path, root: None) -> None:
    paths = _tree(tmp_path)
    with pytest.raises(StorageSourceError, match="no PCI function there"):
        block_device_for_pci_path("11/00", timeout=0.2, **paths)


def test_a_disk_whose_node_is_not_a_block_device_is_refused(tmp_path: Path, root: None) -> None:
    paths = _tree(tmp_path, node=False)
    (paths["dev"] / "vdc").write_bytes(b"")  # a regular file where the node should be
    with pytest.raises(StorageSourceError, match="not a block device"):
        block_device_for_pci_path("10/00", timeout=0.2, **paths)


def test_a_block_device_with_a_name_outside_the_allowed_ones_is_refused(tmp_path: Path, root: None) -> None:
    paths = _tree(tmp_path, name="dm-0")
    with pytest.raises(StorageSourceError, match="not an allowed device path"):
        block_device_for_pci_path("10/00", timeout=0.2, **paths)


@pytest.mark.parametrize("pci_path", ["", "10", "03", "10/", "../10", "10/00/../x", "/10/00", "1/0", "10/20",
                                      "zz/00", "10/00/00/00/00", "10\n"])
def test_hostile_pci_paths_are_refused(pci_path: str) -> None:
    with pytest.raises(StorageSourceError):
        parse_pci_path(pci_path)


def _device(**kw: object) -> agent_pb2.Device:
    base: dict[str, object] = {"id": "d", "type": "blk", "vm_path": "10/00", "container_path": "/dev/xvda"}
    base.update(kw)
    return agent_pb2.Device(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    {"type": "mmioblk"}, {"type": "vfio-pci"}, {"type": ""},
    {"container_path": "/etc/passwd"}, {"container_path": "/dev/../etc/shadow"}, {"container_path": "xvda"},
    {"vm_path": "/dev/vdc"}, {"vm_path": "../../x"},
    {"options": ["ro"]},
])
def test_device_requests_other_than_a_blk_disk_under_dev_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        check_devices([_device(**bad)])


def test_the_same_container_path_twice_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="each path once"):
        check_devices([_device(), _device(vm_path="11/00")])


def test_the_container_gets_the_guests_number() -> None:
    host = {"path": "/dev/host", "type": "b", "major": 7, "minor": 0}
    spec: dict[str, object] = {"linux": {"devices": [host]}}
    spec_devices(spec, [ContainerDevice("/dev/xvda", BlockDevice("vdc", MAJOR, MINOR))])
    assert spec["linux"] == {"devices": [{"path": "/dev/xvda", "type": "b", "major": MAJOR, "minor": MINOR,  # type: ignore[comparison-overlap]
                                          "fileMode": 0o660, "uid": 0, "gid": 0}]}


def _sys_misc(tmp: Path) -> Path:
    (tmp / "dev").write_text("10:236\n")
    return tmp / "dev"


def test_a_privileged_container_gets_each_disk_under_its_kernel_name_once(tmp_path: Path) -> None:
    vdc = BlockDevice("vdc", MAJOR, MINOR)
    nodes = device_mapper_nodes([ContainerDevice("/dev/xvda", vdc), ContainerDevice("/dev/xvdb", vdc),
                                 ContainerDevice("/dev/vdd", BlockDevice("vdd", MAJOR, MINOR + 16))],
                                sys_misc=_sys_misc(tmp_path))
    assert [(n["path"], n["major"], n["minor"]) for n in nodes] == [
        ("/dev/mapper/control", 10, 236), ("/dev/vdc", MAJOR, MINOR)]


@pytest.mark.parametrize("taken", ["/dev/mapper/control", "/dev/vdd"])
def test_a_container_path_taking_another_nodes_place_is_refused(tmp_path: Path, taken: str) -> None:
    # the host names disk vdc /dev/vdd while disk vdd is given too: two nodes would share one path
    devices = [ContainerDevice(taken, BlockDevice("vdc", MAJOR, MINOR)),
               ContainerDevice("/dev/data", BlockDevice("vdd", MAJOR, MINOR + 16))]
    with pytest.raises(InvalidRequestError, match=taken):
        device_mapper_nodes(devices, sys_misc=_sys_misc(tmp_path))


def test_a_disk_on_the_root_bus_is_never_a_containers(tmp_path: Path, root: None) -> None:
    # on q35 the guest's own disks are virtio-blk-pci functions on bus 0: the host naming one's
    # slot must not hand the guest's root, initdata or layer disk to a container
    paths = _tree(tmp_path)
    own = paths["sys_devices"] / "pci0000:00" / "0000:00:03.0" / "virtio1" / "block" / "vdc"
    own.mkdir(parents=True)
    with pytest.raises(StorageSourceError, match="root bus"):
        block_device_for_pci_path("03", timeout=0.2, **paths)
    with pytest.raises(InvalidRequestError, match="root bus"):
        check_devices([_device(vm_path="03")])
