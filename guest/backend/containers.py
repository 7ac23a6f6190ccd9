"""Containers of the sandbox: create / start / exec / signal / wait / streams / remove / stats.

A container's bundle is ``/run/kata-containers/<cid>`` (``config.json`` written atomically, rootfs
from its storages); the OCI runtime creates the init process with fresh stdio pipes (or a pty,
master received over ``--console-socket``), StartContainer releases it. The init process is
registered under the request's exec_id (= cid); execs under theirs. Any failure half-way undoes
what was done (runtime state, mounts, bundle) before the error is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.files import atomic_write
from guest.protocols import agent_pb2

from .cgroups import OomWatcher, cgroup_stats, network_stats
from .devices import check_devices, resolve_devices, spec_devices
from .errors import AgentError, ContainerNotFoundError, InvalidRequestError, ProcessNotFoundError
from .layout import Layout, check_id
from .processes import InputStream, OutputStream, Process, Reaper, handles_sigterm
from .runtime import ConsoleSocket, OciRuntime, Stdio
from .spec import NamespacePaths, oci_process, oci_spec
from .storages import (
    BLOCK_VOLUME_DRIVERS,
    PAUSE_ARGS,
    SANDBOX_CONTAINER_TYPE,
    MountedStorage,
    Storages,
    container_type,
)

__all__ = ["Container", "Containers"]

log = logging.getLogger("guest.backend")

MAX_READ = 1 << 20
REMOVE_WAIT = 10.0
_PAUSE_CAPS: dict[str, list[str]] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted",
                                                     "ambient")}


@dataclass
class Container:
    id: str
    bundle: Path
    spec: dict[str, Any]
    init: Process
    sandbox: bool
    storages: list[MountedStorage]
    processes: dict[str, Process] = field(default_factory=dict)
    started: bool = False


class _Stdio:
    """Pipes (or a console socket) for one new process; the child's ends are closed once it runs."""

    def __init__(self, bundle: Path, name: str, tty: bool) -> None:
        self.tty = tty
        self.console: ConsoleSocket | None = None
        self.child: list[int] = []
        self.parent: dict[str, int] = {}
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.child.append(devnull)
        if tty:
            self.console = ConsoleSocket(bundle / f"{name}.console")
            self.stdio = Stdio(devnull, devnull, devnull)
            return
        fds = {}
        for stream in ("stdin", "stdout", "stderr"):
            r, w = os.pipe()
            child, parent = (r, w) if stream == "stdin" else (w, r)
            self.child.append(child)
            self.parent[stream] = parent
            fds[stream] = child
        self.stdio = Stdio(fds["stdin"], fds["stdout"], fds["stderr"])

    def close_child(self) -> None:
        for fd in self.child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.child.clear()
        if self.console is not None:
            self.console.close()

    def close_parent(self) -> None:
        for fd in self.parent.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.parent.clear()

    def process(self, exec_id: str, pid: int, exit: asyncio.Future[int], master: int | None,
                init: bool) -> Process:
        if master is not None:
            return Process(exec_id, pid, exit, stdin=InputStream(master, owns_fd=False, tty=True),
                           stdout=OutputStream(master), tty=master, init=init)
        return Process(exec_id, pid, exit, stdin=InputStream(self.parent["stdin"]),
                       stdout=OutputStream(self.parent["stdout"]), stderr=OutputStream(self.parent["stderr"]),
                       init=init)


class Containers:
    def __init__(self, layout: Layout, runtime: OciRuntime, reaper: Reaper, storages: Storages,
                 oom: OomWatcher) -> None:
        self.layout = layout
        self.runtime = runtime
        self.reaper = reaper
        self.storages = storages
        self.oom = oom
        self.containers: dict[str, Container] = {}
        self._busy: set[str] = set()

    # -- lookup ---------------------------------------------------------------------------------------
    def get(self, container_id: str) -> Container:
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerNotFoundError(container_id)
        return c

    def process(self, container_id: str, exec_id: str) -> Process:
        c = self.get(container_id)
        p = c.processes.get(exec_id or c.init.exec_id)
        if p is None:
            raise ProcessNotFoundError(container_id, exec_id)
        return p

    def cgroup_dir(self, container_id: str) -> Path:
        return self.layout.cgroup_root / self.layout.cgroup(container_id).lstrip("/")

    # -- create ---------------------------------------------------------------------------------------
    async def create(self, req: agent_pb2.CreateContainerRequest, *, sandbox_id: str,
                     namespaces: NamespacePaths) -> Container:
        cid = check_id("container_id", req.container_id)
        exec_id = check_id("exec_id", req.exec_id) if req.exec_id else cid
        if cid in self.containers or cid in self._busy:
            raise AgentError(f"container {cid} already exists", code=None)
        check_devices(req.devices)
        kind = container_type(req.storages, req.OCI.Annotations)
        is_sandbox = kind == SANDBOX_CONTAINER_TYPE
        if is_sandbox != (cid == sandbox_id):
            raise InvalidRequestError("container_id", cid, f"the sandbox id {sandbox_id} exactly for the "
                                      "sandbox container")
        bundle = self.layout.bundle(cid)
        self._busy.add(cid)
        mounted: list[MountedStorage] = []
        stdio: _Stdio | None = None
        created = False
        try:
            bundle.mkdir(parents=True, exist_ok=False)
            devices = await asyncio.to_thread(resolve_devices, req.devices) if req.devices else []
            mounted, rootfs = await self.storages.mount_container(cid, req.storages, is_sandbox)
            if rootfs is None:
                raise InvalidRequestError("storages", [s.driver for s in req.storages],
                                          "a rootfs storage (image_guest_pull or erofs.multi-layer)")
            process = None
            if is_sandbox:
                process = {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(PAUSE_ARGS),
                           "env": ["PATH=/"], "cwd": "/", "capabilities": _PAUSE_CAPS,
                           "noNewPrivileges": True}
            volumes = [Path(s.mount_point) for s in req.storages if s.driver in BLOCK_VOLUME_DRIVERS]
            spec = oci_spec(req.OCI, layout=self.layout, container_id=cid, namespaces=namespaces,
                            sandbox_container=is_sandbox, process=process, volumes=volumes)
            spec["root"]["path"] = str(rootfs)
            # A container holding CAP_SYS_ADMIN (privileged, pinned by the policy) may map its disks.
            spec_devices(spec, devices,
                         device_mapper="CAP_SYS_ADMIN" in req.OCI.Process.Capabilities.Bounding)
            atomic_write(bundle / "config.json", json.dumps(spec, indent=1).encode(), mode=0o600)
            stdio = _Stdio(bundle, "init", bool(spec["process"]["terminal"]))
            receive = (asyncio.ensure_future(stdio.console.receive()) if stdio.console is not None else None)
            try:
                pid = await self.runtime.create(cid, bundle, bundle / "init.pid", stdio.stdio,
                                                stdio.console.path if stdio.console else None)
                created = True
                master = await asyncio.wait_for(receive, 30) if receive is not None else None
            finally:
                if receive is not None and not receive.done():
                    receive.cancel()
                stdio.close_child()
            init = stdio.process(exec_id, pid, self.reaper.wait(pid), master, init=True)
            c = Container(cid, bundle, spec, init, is_sandbox, mounted)
            c.processes[exec_id] = init
            self.containers[cid] = c
            log.info("event=container_created container=%s pid=%d sandbox=%s", cid, pid,
                     str(is_sandbox).lower())
            return c
        except BaseException:
            if stdio is not None:
                stdio.close_child()
                stdio.close_parent()
            if created:
                with contextlib.suppress(AgentError):
                    await self.runtime.delete(cid, force=True)
            for m in reversed(mounted):
                with contextlib.suppress(AgentError):
                    m.release()
            _remove_bundle(bundle)
            raise
        finally:
            self._busy.discard(cid)

    async def start(self, container_id: str) -> None:
        c = self.get(container_id)
        if c.started:
            raise AgentError(f"container {container_id} is already started")
        await self.runtime.start(c.id)
        c.started = True
        if not c.sandbox:
            self.oom.watch(c.id, self.cgroup_dir(c.id))

    # -- exec -----------------------------------------------------------------------------------------
    async def exec(self, req: agent_pb2.ExecProcessRequest) -> Process:
        c = self.get(req.container_id)
        exec_id = check_id("exec_id", req.exec_id)
        if exec_id in c.processes:
            raise AgentError(f"exec id {exec_id} already in use in container {c.id}")
        if not c.started or c.init.exit.done():
            raise AgentError(f"container {c.id} is not running")
        process = oci_process(req.process, default_caps=c.spec["process"].get("capabilities"))
        process_file = c.bundle / f"exec-{exec_id}.json"
        atomic_write(process_file, json.dumps(process).encode(), mode=0o600)
        stdio = _Stdio(c.bundle, f"exec-{exec_id}", bool(process["terminal"]))
        receive = asyncio.ensure_future(stdio.console.receive()) if stdio.console is not None else None
        try:
            pid = await self.runtime.exec(c.id, process_file, c.bundle / f"exec-{exec_id}.pid", stdio.stdio,
                                          stdio.console.path if stdio.console else None,
                                          c.bundle / f"exec-{exec_id}.log")
            master = await asyncio.wait_for(receive, 30) if receive is not None else None
        except BaseException:
            if receive is not None and not receive.done():
                receive.cancel()
            stdio.close_child()
            stdio.close_parent()
            raise
        finally:
            with contextlib.suppress(OSError):
                process_file.unlink()
        stdio.close_child()
        p = stdio.process(exec_id, pid, self.reaper.wait(pid), master, init=False)
        c.processes[exec_id] = p
        return p

    # -- signals and waiting --------------------------------------------------------------------------
    async def signal(self, req: agent_pb2.SignalProcessRequest) -> None:
        c = self.get(req.container_id)
        sig = req.signal
        if not 0 < sig < signal.NSIG:
            raise InvalidRequestError("signal", sig, f"1..{signal.NSIG - 1}")
        if req.exec_id == "" and sig == signal.SIGKILL:
            await self._kill_all(c)
            return
        p = self.process(c.id, req.exec_id)
        if p.init and sig == signal.SIGTERM and not handles_sigterm(p.pid):
            sig = signal.SIGKILL  # PID 1 of a pid namespace ignores signals it does not handle
        p.signal(sig)

    async def _kill_all(self, c: Container) -> None:
        procs = self.cgroup_dir(c.id) / "cgroup.procs"
        freeze = self.cgroup_dir(c.id) / "cgroup.freeze"
        frozen = False
        with contextlib.suppress(OSError):
            freeze.write_text("1")
            frozen = True
        try:
            try:
                pids = [int(x) for x in procs.read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            c.init.signal(signal.SIGKILL)
        finally:
            if frozen:
                with contextlib.suppress(OSError):
                    freeze.write_text("0")

    async def wait(self, container_id: str, exec_id: str) -> int:
        c = self.get(container_id)
        p = self.process(container_id, exec_id)
        code = await asyncio.shield(p.exit)
        if c.processes.get(p.exec_id) is p:
            del c.processes[p.exec_id]
            if not p.init:
                p.close()
        return code

    # -- streams --------------------------------------------------------------------------------------
    async def read(self, req: agent_pb2.ReadStreamRequest, *, stderr: bool) -> bytes:
        p = self.process(req.container_id, req.exec_id)
        stream = p.stderr if stderr else p.stdout
        if stream is None:
            return b""
        return await stream.read(min(req.len or 32768, MAX_READ))

    async def write_stdin(self, req: agent_pb2.WriteStreamRequest) -> int:
        p = self.process(req.container_id, req.exec_id)
        if p.stdin is None:
            raise AgentError(f"process {p.exec_id} has no stdin")
        if not req.data:
            await p.stdin.close()
            return 0
        try:
            return await p.stdin.write(req.data)
        except BrokenPipeError as e:
            raise AgentError(f"stdin of {p.exec_id}: {e.strerror}") from e

    async def close_stdin(self, req: agent_pb2.CloseStdinRequest) -> None:
        p = self.process(req.container_id, req.exec_id)
        if p.stdin is not None:
            await p.stdin.close()

    def resize(self, req: agent_pb2.TtyWinResizeRequest) -> None:
        p = self.process(req.container_id, req.exec_id)
        if p.tty is None:
            from guest.ttrpc import Code

            raise AgentError("no tty", code=Code.UNAVAILABLE)
        p.resize(req.row, req.column)

    # -- remove / stats -------------------------------------------------------------------------------
    async def remove(self, container_id: str, grace: float = REMOVE_WAIT) -> None:
        c = self.get(container_id)
        self.oom.unwatch(c.id)
        await self._kill_all(c)
        for p in [*c.processes.values(), c.init]:
            p.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(p.exit), grace or REMOVE_WAIT)
        errors: list[str] = []
        try:
            await self.runtime.delete(c.id, force=True)
        except AgentError as e:
            errors.append(str(e))
        for p in [*c.processes.values(), c.init]:
            p.close()
        for m in reversed(c.storages):
            try:
                m.release()
            except AgentError as e:
                errors.append(str(e))
        cgroup = self.cgroup_dir(c.id)
        with contextlib.suppress(FileNotFoundError):
            cgroup.rmdir()
        _remove_bundle(c.bundle)
        del self.containers[c.id]
        left = _mounts_below(c.bundle)
        log.info("event=container_removed container=%s mounts_left=%d cgroup_left=%s bundle_left=%s", c.id,
                 len(left), str(cgroup.exists()).lower(), str(c.bundle.exists()).lower())
        if errors:
            raise AgentError("; ".join(errors))

    def stats(self, container_id: str) -> agent_pb2.StatsContainerResponse:
        c = self.get(container_id)
        return agent_pb2.StatsContainerResponse(cgroup_stats=cgroup_stats(self.cgroup_dir(c.id)),
                                                network_stats=network_stats())


def _mounts_below(path: Path) -> list[Path]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        target = Path(line.split()[4].encode().decode("unicode_escape"))
        if target == path or target.is_relative_to(path):
            found.append(target)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _remove_bundle(bundle: Path) -> None:
    """Remove the bundle, never into something still mounted below it (lazy-unmounted first)."""
    from .storages import _lazy_umount

    for target in _mounts_below(bundle):
        with contextlib.suppress(OSError):
            _lazy_umount(target)()
    if _mounts_below(bundle):
        raise AgentError(f"{bundle} still has mounts; left in place")
    shutil.rmtree(bundle, ignore_errors=True)
