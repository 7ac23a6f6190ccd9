"""Boot the pod-VM image under QEMU (``microvm``, TCG unless KVM is proven to work).

One ``VirtualMachine`` per boot, each in its own temporary directory (console log, pid file,
sockets). QEMU is killed by the PID this object spawned, never by name. The console is read
by a thread and kept in memory and in ``console.log`` so tests can wait for ``MARK`` lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from image.build.description import DESCRIPTION_NAME, ImageDescription

__all__ = ["QEMU", "BootTimeoutError", "Disk", "SerialPort", "VirtualMachine", "qemu_available"]

QEMU = "qemu-system-x86_64"


class BootTimeoutError(Exception):
    """The guest did not print the expected console line in time."""


def qemu_available() -> str | None:
    """None if VMs can be booted here, else the reason they cannot."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not installed (apt-get install qemu-system-x86)"
    if not any(Path("/boot").glob("vmlinuz-*-cloud-amd64")):
        return "no guest kernel in /boot (apt-get install linux-image-cloud-amd64)"
    return None


def host_timing_args() -> str:
    """``tsc_early_khz=`` with the host's TSC rate (TCG's guest TSC runs at the host rate).

    Under TCG on a loaded host the guest's PIT-based TSC calibration fails now and then, and the
    kernel then stalls for tens of seconds calibrating its delay loop without a reference clock.
    The pod-VM launcher (runtime.podvm) adds the same argument.
    """
    from runtime.podvm import host_timing_arg

    return host_timing_arg()


@dataclass(frozen=True, slots=True)
class Disk:
    path: Path
    serial: str = ""
    readonly: bool = True


@dataclass(frozen=True, slots=True)
class SerialPort:
    """A virtio-serial port: ``socket`` (QEMU listens on a unix socket) or ``file`` (guest → file)."""

    name: str
    kind: str = "socket"


@dataclass
class VirtualMachine:
    image_dir: Path
    extra_cmdline: str = ""
    disk_override: Path | None = None
    disks: list[Disk] = field(default_factory=list)
    ports: list[SerialPort] = field(default_factory=list)
    memory_mib: int = 1024
    accel: str = "tcg"
    workdir: Path | None = None
    base_cmdline: str | None = None  # replaces the image's command line (negative tests)
    extra_args: list[str] = field(default_factory=list)  # more QEMU devices (e.g. a NIC on a hub port)

    def __post_init__(self) -> None:
        self.description = ImageDescription.load(self.image_dir / DESCRIPTION_NAME)
        self._own_workdir = self.workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="cg-vm-")) if self.workdir is None else self.workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.console = bytearray()
        self._lock = threading.Condition()
        self._reader: threading.Thread | None = None
        self.started_at = 0.0

    def port_path(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / f"port-{name}"

    @property
    def cmdline(self) -> str:
        base = self.description.cmdline if self.base_cmdline is None else self.base_cmdline
        return f"{base} {host_timing_args()} {self.extra_cmdline}".strip()

    def argv(self) -> list[str]:
        d = self.description
        assert self.workdir is not None
        disk = self.disk_override or self.image_dir / d.disk
        argv = [
            QEMU, "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=on",
            "-accel", self.accel, "-cpu", "max" if self.accel == "tcg" else "host",
            "-m", str(self.memory_mib), "-smp", "1", "-nodefaults", "-no-user-config", "-nographic",
            "-no-reboot", "-serial", "stdio", "-pidfile", str(self.workdir / "qemu.pid"),
            "-kernel", str(self.image_dir / d.kernel), "-initrd", str(self.image_dir / d.initrd),
            "-append", self.cmdline,
            "-drive", f"id=root,file={disk},format=raw,if=none,readonly=on,cache=unsafe",
            "-device", "virtio-blk-device,drive=root",
        ]
        for i, extra in enumerate(self.disks):
            ro = "on" if extra.readonly else "off"
            serial = f",serial={extra.serial}" if extra.serial else ""
            argv += ["-drive", f"id=d{i},file={extra.path},format=raw,if=none,readonly={ro},cache=unsafe",
                     "-device", f"virtio-blk-device,drive=d{i}{serial}"]
        if self.ports:
            argv += ["-device", "virtio-serial-device"]
            for i, port in enumerate(self.ports):
                path = self.port_path(port.name)
                if port.kind == "file":
                    argv += ["-chardev", f"file,id=c{i},path={path}"]
                else:
                    argv += ["-chardev", f"socket,id=c{i},path={path},server=on,wait=off"]
                argv += ["-device", f"virtserialport,chardev=c{i},name={port.name}"]
        return argv + self.extra_args

    def start(self) -> VirtualMachine:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read_console, name="vm-console", daemon=True)
        self._reader.start()
        return self

    def _read_console(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self.workdir is not None
        with open(self.workdir / "console.log", "wb") as log:
            while chunk := os.read(self.proc.stdout.fileno(), 65536):
                log.write(chunk)
                log.flush()
                with self._lock:
                    self.console += chunk
                    self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def text(self) -> str:
        with self._lock:
            return self.console.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the console matches ``pattern`` (a regex); BootTimeoutError with the log tail if not."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                m = rx.search(self.console.decode(errors="replace"))
                if m:
                    return m
                left = deadline - time.monotonic()
                exited = self.proc is not None and self.proc.poll() is not None and not (
                    self._reader and self._reader.is_alive())
                if left <= 0 or exited:
                    tail = self.console.decode(errors="replace")[-3000:]
                    why = "qemu exited" if exited else f"timeout after {timeout}s"
                    raise BootTimeoutError(f"{why} waiting for {pattern!r}; console tail:\n{tail}")
                self._lock.wait(min(left, 0.5))

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            tail = self.text()[-3000:]
            raise BootTimeoutError(f"VM still running after {timeout}s; console tail:\n{tail}") from None
        if self._reader is not None:
            self._reader.join(5)
        return rc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def close(self) -> None:
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> VirtualMachine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
