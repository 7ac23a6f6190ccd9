"""The sandbox: CreateSandbox (hostname, DNS, shm, shared IPC/UTS namespaces), GetGuestDetails,
DestroySandbox.

CreateSandbox, like kata-agent: recreate /run/kata-containers, remember sid, hostname and whether
the pod shares one pid namespace; persistent IPC and UTS namespaces bind-mounted under
/run/sandbox-ns (``busybox unshare --ipc=FILE --uts=FILE``, hostname set inside); mount the
``ephemeral`` shm storage; write the DNS lines to /run/kata-containers/sandbox/resolv.conf and
bind it over /etc/resolv.conf. Unlike kata-agent it refuses kernel modules and guest hooks named by
the host (the measured image decides what code runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from common.files import atomic_write
from guest.protocols import agent_pb2
from guest.storage.mount import mount

from .errors import AgentError, InvalidRequestError
from .inprocess import AGENT_VERSION
from .layout import Layout, check_id
from .processes import Reaper
from .runtime import run_tool
from .spec import NamespacePaths
from .storages import (
    IMAGE_STORE_MOUNT,
    MS_BIND,
    MountedStorage,
    Storages,
    _lazy_umount,
    check_image_store_request,
)

__all__ = ["STORAGE_HANDLERS", "Sandbox", "guest_details"]

log = logging.getLogger("guest.backend")

STORAGE_HANDLERS = ("ephemeral", "image_guest_pull", "erofs.multi-layer")
BUSYBOX = Path("/usr/bin/busybox")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})")
MAX_DNS_LINES = 64
MAX_DNS_LINE = 1024


@dataclass
class Sandbox:
    layout: Layout
    reaper: Reaper
    storages: Storages
    id: str = ""
    hostname: str = ""
    pidns: bool = False
    shared_ns: bool = True
    mounts: list[MountedStorage] = field(default_factory=list)
    created: bool = False
    pause_pid: int | None = None

    def namespaces(self) -> NamespacePaths:
        ns = self.layout.sandbox_ns
        ipc = ns / "ipc" if self.shared_ns else None
        uts = ns / "uts" if self.shared_ns else None
        pid = Path(f"/proc/{self.pause_pid}/ns/pid") if self.pidns and self.pause_pid else None
        return NamespacePaths(ipc, uts, pid)

    async def create(self, req: agent_pb2.CreateSandboxRequest) -> None:
        if self.created:
            raise AgentError("sandbox already created")
        sid = check_id("sandbox_id", req.sandbox_id)
        hostname = req.hostname
        if hostname and not _HOSTNAME.fullmatch(hostname):
            raise InvalidRequestError("hostname", hostname, "a host name of 1-64 characters [A-Za-z0-9.-]")
        if len(req.dns) > MAX_DNS_LINES or any(len(d) > MAX_DNS_LINE or "\0" in d or "\n" in d
                                               for d in req.dns):
            raise InvalidRequestError("dns", f"{len(req.dns)} lines", f"≤ {MAX_DNS_LINES} lines of ≤ "
                                      f"{MAX_DNS_LINE} characters without NUL/newline")
        if req.kernel_modules:
            raise InvalidRequestError("kernel_modules", [m.name for m in req.kernel_modules],
                                      "none (the measured image loads its modules)")
        if req.guest_hook_path:
            raise InvalidRequestError("guest_hook_path", req.guest_hook_path, "empty (no guest hooks)")
        image_store = None
        for s in req.storages:
            if s.driver == "blk" and s.mount_point == IMAGE_STORE_MOUNT and image_store is None:
                check_image_store_request(s)
                image_store = s
            elif s.driver != "ephemeral" or s.mount_point != "/run/kata-containers/sandbox/shm":
                raise InvalidRequestError("storages", f"{s.driver} at {s.mount_point}",
                                          "the ephemeral shm at /run/kata-containers/sandbox/shm and the "
                                          f"image store at {IMAGE_STORE_MOUNT}")
        kata = self.layout.kata_run
        if kata.exists():
            shutil.rmtree(kata)
        for d in (self.layout.shared, self.layout.sandbox):
            d.mkdir(parents=True, exist_ok=True)
        try:
            for s in req.storages:
                if s is not image_store:
                    self.mounts.append(self.storages.mount_tmpfs(s, self.layout.sandbox))
            if image_store is not None:
                self.mounts.append(await self.storages.open_image_store(image_store))
            await self._namespaces(hostname)
            self._resolv_conf(list(req.dns))
        except BaseException:
            self._release()
            raise
        self.id, self.hostname, self.pidns, self.created = sid, hostname, req.sandbox_pidns, True
        log.info("event=sandbox_created sandbox=%s hostname=%s pidns=%s", sid, hostname,
                 str(req.sandbox_pidns).lower())

    async def _namespaces(self, hostname: str) -> None:
        ns = self.layout.sandbox_ns
        ns.mkdir(parents=True, exist_ok=True)
        for name in ("ipc", "uts"):
            (ns / name).touch()
        argv = [str(BUSYBOX), "unshare", f"--ipc={ns / 'ipc'}", f"--uts={ns / 'uts'}",
                str(BUSYBOX), "hostname", hostname or "localhost"]
        code, out = await run_tool(self.reaper, argv)
        if code != 0:
            raise AgentError(f"creating the sandbox IPC/UTS namespaces: {out.strip() or code}")
        for name in ("ipc", "uts"):
            self.mounts.append(MountedStorage("namespace", ns / name, [_lazy_umount(ns / name)]))

    def _resolv_conf(self, lines: list[str]) -> None:
        if not lines:
            return
        atomic_write(self.layout.resolv_conf, "\n".join(lines).encode(), mode=0o644)
        etc = self.layout.root / "etc/resolv.conf"
        mount(str(self.layout.resolv_conf), etc, "", MS_BIND)
        self.mounts.append(MountedStorage("resolv.conf", etc, [_lazy_umount(etc)]))

    def _release(self) -> None:
        for m in reversed(self.mounts):
            with contextlib.suppress(AgentError):
                m.release()
        self.mounts.clear()

    def destroy(self) -> None:
        self._release()
        with contextlib.suppress(AgentError):
            self.storages.release_pod_volumes()
        self.created = False


def _read_hex(path: Path) -> int:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return 0


def guest_details(req: agent_pb2.GuestDetailsRequest) -> agent_pb2.GuestDetailsResponse:
    memory = Path("/sys/devices/system/memory")
    out = agent_pb2.GuestDetailsResponse()
    if req.mem_block_size:
        out.mem_block_size_bytes = _read_hex(memory / "block_size_bytes")
    if req.mem_hotplug_probe:
        out.support_mem_hotplug_probe = (memory / "probe").exists()
    details = out.agent_details
    details.version = AGENT_VERSION
    details.init_daemon = os.getpid() == 1
    details.storage_handlers.extend(STORAGE_HANDLERS)
    details.supports_seccomp = False
    return out
