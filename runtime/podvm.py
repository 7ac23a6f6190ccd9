"""The pod VM: QEMU with the measured image, the initdata device and the agent's hybrid vsock.

One ``PodVM`` per sandbox, in the sandbox's state directory (console log, QEMU pid file, the
hybrid-vsock socket, the initdata image). ``qemu_argv`` is pure (unit-tested against the
Kata configuration Contrast ships); ``PodVM`` runs it under asyncio.

TEE modes:
- ``snp``: q35, ``sev-snp-guest`` with ``host-data`` = the initdata digest (32 bytes) and Kata's
  guest policy, OVMF, memory from a memfd backend; KVM only.
- ``tdx``: q35, ``tdx-guest`` with ``mrconfigid`` = the digest zero-padded to 48 bytes; KVM only.
- ``simulated`` (no SEV-SNP/TDX here): microvm, and the digest goes on the kernel command line as
  ``cg.test.hostdata=<hex>``, which the guest's simulated report provider reports as HOST_DATA.
  The command line is measured, so such a VM has another launch digest than the image's
  reference values and can never pass for a real one.
In every mode the agent is reached through a virtio-serial port carrying Kata's hybrid vsock
(the image's in-guest relay connects it to the agent's vsock port 1024).

Disks known only after boot (a container's volumeDevices, more image layers) are hotplugged
through QMP onto empty ``pcie-root-port`` slots (:data:`HOTPLUG_SLOTS` of them, root port ``i``
at ``00:<0x10+i>.0`` so the device's Kata PCI path is ``<0x10+i>/00``). ``simulated`` uses microvm with
``pcie=on`` (a generic PCIe host next to the virtio-mmio boot disks) and adds ``pcie_ports=native``
to the command line: microvm's ACPI tables give no ``_OSC``, so without it the guest would not
drive the root ports' native hotplug. On q35 (snp, tdx) OVMF's ``_OSC`` grants it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from attestation import initdata as initdata_format
from image.build import DESCRIPTION_NAME, ImageDescription

from .config import Config
from .errors import ConfigError, FailedPreconditionError
from .hvsock import HybridVsockBridge
from .network import Nic
from .qmp import QmpClient, QmpError

__all__ = [
    "HOTPLUG_SLOTS", "HVSOCK_PORT", "HotpluggedDisk", "PodVM", "VmLaunch", "host_timing_arg", "kvm_usable",
    "qemu_argv",
]

log = logging.getLogger("runtime.podvm")

HVSOCK_PORT = "cg.hvsock"
AGENT_PORT = 1024
HOTPLUG_SLOTS = 8  # empty root ports (~nothing at boot each): the image store, emptyDirs, volumes, layers
HOTPLUG_FIRST_SLOT = 0x10  # root port i at 00:<0x10+i>.0, clear of q35's own and the boot disks' slots
QMP_SOCKET = "qmp.sock"


def kvm_usable() -> bool:
    """KVM is usable if /dev/kvm answers KVM_GET_API_VERSION with 12 and the CPU shows hardware
    virtualization (vmx/svm): a nested guest can have a /dev/kvm whose VMs never run."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, 0xAE00) != 12:  # KVM_GET_API_VERSION
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"vmx", "svm"} & set(line.split()))
    except OSError:
        pass
    return False


@dataclass(frozen=True, slots=True)
class VmLaunch:
    """What one boot needs: the configuration, the image, the initdata and the state directory."""

    config: Config
    image: ImageDescription
    initdata_digest: bytes  # sha256 of the initdata TOML bytes
    initdata_image: Path
    workdir: Path
    accel: str  # kvm or tcg (resolved)
    extra_cmdline: str = ""
    layers: tuple[Path, ...] = ()  # host-EROFS layer images, attached read-only after the initdata disk
    nic: Nic | None = None  # the pod network's tap (an open fd QEMU inherits) and the veth's MAC
    hotplug_slots: int = HOTPLUG_SLOTS


def host_timing_arg() -> str:
    """``tsc_early_khz=<host TSC rate>`` for TCG boots (empty if unknown)."""
    # Under TCG on a loaded host the guest's PIT-based TSC calibration can fail and stall the boot;
    # giving the host's TSC rate avoids it (the value is not secret and only affects timing).
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return f"tsc_early_khz={int(float(line.split(':')[1]) * 1000)}"
    except (OSError, ValueError):
        pass
    return ""


def kernel_cmdline(launch: VmLaunch) -> str:
    """The image's measured command line, as is (Kata's kernel_params are replaced, not appended);
    the simulated TEE adds its HOST_DATA, TCG its timing hint."""
    words = [launch.image.cmdline]
    if launch.config.tee == "simulated":
        words.append(f"cg.test.hostdata={launch.initdata_digest.hex()}")
        if launch.hotplug_slots:
            words.append("pcie_ports=native")
        if launch.accel == "tcg":
            words.append(host_timing_arg())
    if launch.extra_cmdline:
        words.append(launch.extra_cmdline)
    return " ".join(w for w in words if w)


def qemu_argv(launch: VmLaunch) -> list[str]:
    cfg, image, wd = launch.config, launch.image, launch.workdir
    base = cfg.image_dir
    common = [
        "-m",
        f"{cfg.memory_mib}M",
        "-smp",
        str(cfg.vcpus),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        f"file:{wd / 'console.log'}",
        "-pidfile",
        str(wd / "qemu.pid"),
        "-qmp",
        f"unix:{wd / QMP_SOCKET},server=on,wait=off",
        "-kernel",
        str(base / image.kernel),
        "-initrd",
        str(base / image.initrd),
        "-append",
        kernel_cmdline(launch),
    ]
    hvsock = ["-chardev", f"socket,id=hvsock,path={wd / 'hvsock-port.sock'},server=on,wait=off"]
    if cfg.tee == "simulated":
        argv = [
            cfg.qemu,
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=on"
            + (",pcie=on" if launch.hotplug_slots else ""),
            "-accel",
            launch.accel,
            "-cpu",
            "max" if launch.accel == "tcg" else "host",
            *common,
        ]
        blk, serial = "virtio-blk-device", "virtio-serial-device"
    else:
        if launch.accel != "kvm":
            raise ConfigError(f"tee = {cfg.tee!r} needs KVM (/dev/kvm is not usable here)")
        assert cfg.firmware is not None
        if cfg.tee == "snp":
            host_data = initdata_format.platform_digest(
                launch.initdata_digest, initdata_format.SNP_HOST_DATA_SIZE
            )
            tee = [
                "-object",
                f"memory-backend-memfd,id=ram0,size={cfg.memory_mib}M,share=true",
                "-object",
                f"sev-snp-guest,id=tee0,cbitpos=51,reduced-phys-bits=1,"
                f"policy={cfg.snp_guest_policy:#x},"
                f"host-data={base64.b64encode(host_data).decode()}",
                "-M",
                "q35,confidential-guest-support=tee0,memory-backend=ram0",
            ]
            cpu = "EPYC-v4"
        else:
            mrconfigid = initdata_format.platform_digest(
                launch.initdata_digest, initdata_format.TDX_MRCONFIGID_SIZE
            )
            tee = [
                "-object",
                f"tdx-guest,id=tee0,mrconfigid={base64.b64encode(mrconfigid).decode()}",
                "-M",
                "q35,confidential-guest-support=tee0,kernel-irqchip=split",
            ]
            cpu = "host"
        argv = [cfg.qemu, *tee, "-accel", "kvm", "-cpu", cpu, "-bios", str(cfg.firmware), *common]
        blk, serial = "virtio-blk-pci", "virtio-serial-pci"
    argv += [
        "-drive",
        f"id=root,file={base / image.disk},format=raw,if=none,readonly=on,cache=unsafe",
        "-device",
        f"{blk},drive=root",
        "-drive",
        f"id=initdata,file={launch.initdata_image},format=raw,if=none,readonly=on",
        "-device",
        f"{blk},drive=initdata,serial=initdata",
    ]
    for i, layer in enumerate(launch.layers):
        argv += ["-drive", f"id=layer{i},file={layer},format=raw,if=none,readonly=on",
                 "-device", f"{blk},drive=layer{i}"]
    if launch.nic is not None:
        # The tap was opened in the pod's netns; QEMU gets the file, not a name, and stays in ours.
        net = "virtio-net-device" if cfg.tee == "simulated" else "virtio-net-pci"
        argv += ["-netdev", f"tap,id=pod0,fd={launch.nic.fd},vhost=off",
                 "-device", f"{net},netdev=pod0,mac={launch.nic.mac}"]
    for i in range(launch.hotplug_slots):
        argv += ["-device",
                 f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},slot={i},"
                 f"addr={HOTPLUG_FIRST_SLOT + i:#x}"]
    argv += [
        "-device",
        serial,
        *hvsock,
        "-device",
        f"virtserialport,chardev=hvsock,name={HVSOCK_PORT}",
    ]
    return argv


@dataclass(frozen=True, slots=True)
class HotpluggedDisk:
    """A disk attached to the running VM: its root port, QEMU ids and the guest's PCI path."""

    slot: int
    node: str  # blockdev node name
    device: str  # device id
    pci_path: str  # Kata's PCI path "<root port slot>/<device slot>", hex

    @staticmethod
    def for_slot(slot: int) -> HotpluggedDisk:
        pci_path = f"{HOTPLUG_FIRST_SLOT + slot:02x}/00"
        return HotpluggedDisk(slot, f"hp-drive{slot}", f"hp-disk{slot}", pci_path)


def load_image(config: Config) -> ImageDescription:
    try:
        return ImageDescription.load(config.image_dir / DESCRIPTION_NAME)
    except (OSError, ValueError) as e:
        raise ConfigError(f"image.dir {config.image_dir}: no usable {DESCRIPTION_NAME} ({e})") from None


def resolve_accel(config: Config) -> str:
    if config.accel == "auto":
        return "kvm" if kvm_usable() else "tcg"
    return config.accel


class PodVM:
    """A running QEMU for one sandbox. ``exited`` resolves with QEMU's exit code."""

    def __init__(self, launch: VmLaunch) -> None:
        self.launch = launch
        self.proc: asyncio.subprocess.Process | None = None
        self.bridge: HybridVsockBridge | None = None
        self.agent_socket = launch.workdir / "agent.sock"
        self.exited: asyncio.Future[int] | None = None
        self.qmp: QmpClient | None = None
        self.hotplugged: dict[int, HotpluggedDisk] = {}
        self._hotplug_lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    async def start(self) -> None:
        argv = qemu_argv(self.launch)
        log.info(
            "event=vm_start workdir=%s accel=%s tee=%s",
            self.launch.workdir,
            self.launch.accel,
            self.launch.config.tee,
        )
        errfd = os.open(self.launch.workdir / "qemu.stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=errfd,
                start_new_session=True,
                pass_fds=(self.launch.nic.fd,) if self.launch.nic is not None else (),
            )
        finally:
            os.close(errfd)
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        waiter = loop.create_task(self._wait())
        waiter.add_done_callback(lambda _t: None)
        self._waiter = waiter
        self.bridge = HybridVsockBridge(self.launch.workdir / "hvsock-port.sock", self.agent_socket)
        try:
            await self.bridge.start(connect_within=30.0)
        except OSError:
            await self.stop()
            raise

    async def _wait(self) -> None:
        assert self.proc is not None and self.exited is not None
        rc = await self.proc.wait()
        log.info("event=vm_exited pid=%d rc=%d", self.proc.pid, rc)
        if not self.exited.done():
            self.exited.set_result(rc)

    async def _qmp(self) -> QmpClient:
        if self.qmp is None:
            client = QmpClient()
            await client.connect(self.launch.workdir / QMP_SOCKET, within=30)
            self.qmp = client
        return self.qmp

    async def attach_disk(self, path: Path, *, readonly: bool, block_device: bool) -> HotpluggedDisk:
        """Hotplug ``path`` (a host block device or a raw disk file the caller checked) as a
        virtio-blk-pci disk on a free root port; the guest sees it once pciehp has probed it."""
        async with self._hotplug_lock:
            free = [i for i in range(self.launch.hotplug_slots) if i not in self.hotplugged]
            if not free:
                raise FailedPreconditionError(
                    f"disk hotplug: all {self.launch.hotplug_slots} root ports of the pod VM are in use"
                )
            disk = HotpluggedDisk.for_slot(free[0])
            try:
                qmp = await self._qmp()
                await qmp.execute("blockdev-add", {
                    "driver": "raw",
                    "node-name": disk.node,
                    "read-only": readonly,
                    "file": {"driver": "host_device" if block_device else "file", "filename": str(path),
                             "read-only": readonly, "aio": "threads"},
                })
                try:
                    await qmp.execute("device_add", {
                        "driver": "virtio-blk-pci", "id": disk.device, "drive": disk.node,
                        "bus": f"rp{disk.slot}", "addr": "0x0",
                    })
                except QmpError:
                    await qmp.execute("blockdev-del", {"node-name": disk.node})
                    raise
            except QmpError as e:
                raise FailedPreconditionError(f"disk hotplug of {path}: {e}") from None
            self.hotplugged[disk.slot] = disk
            log.info("event=disk_hotplugged path=%s pci_path=%s readonly=%s", path, disk.pci_path,
                     readonly)
            return disk

    async def detach_disk(self, disk: HotpluggedDisk, within: float = 10.0) -> None:
        """Unplug (the guest must have let go of it); the slot is free again once QEMU says so."""
        async with self._hotplug_lock:
            if self.hotplugged.get(disk.slot) != disk or self.exited is None or self.exited.done():
                return
            qmp = await self._qmp()
            try:
                await qmp.execute("device_del", {"id": disk.device})
                loop = asyncio.get_running_loop()
                deadline = loop.time() + within
                while True:
                    # blockdev-del succeeds only once the guest has acknowledged the unplug
                    try:
                        await qmp.execute("blockdev-del", {"node-name": disk.node})
                        break
                    except QmpError:
                        if loop.time() > deadline:
                            raise
                        await asyncio.sleep(0.1)
            except QmpError as e:
                log.warning("event=disk_unplug_failed pci_path=%s error=%s", disk.pci_path, e)
                return
            del self.hotplugged[disk.slot]
            log.info("event=disk_unplugged pci_path=%s", disk.pci_path)

    def console_tail(self, size: int = 2000) -> str:
        """The end of the guest console and of QEMU's own error output."""
        parts = []
        for name in ("console.log", "qemu.stderr"):
            try:
                parts.append((self.launch.workdir / name).read_bytes()[-size:].decode(errors="replace"))
            except OSError:
                continue
        return "\n".join(p for p in parts if p)

    async def stop(self, grace: float = 0.0) -> None:
        """Kill QEMU (by the pid this object spawned) and close the bridge."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        if self.bridge is not None:
            await self.bridge.close()
            self.bridge = None
        if self.qmp is not None:
            await self.qmp.close()
            self.qmp = None


def write_initdata_image(raw_toml: bytes, path: Path) -> bytes:
    """Check the initdata document, write its device image; return its digest."""
    try:
        initdata_format.parse(raw_toml)
    except initdata_format.InitdataError as e:
        raise ConfigError(f"initdata: {e}") from None
    path.write_bytes(initdata_format.encode_device(raw_toml))
    return initdata_format.digest(raw_toml)
