"""The agent backend behind the policy interceptor, served in the same process.

:class:`AgentBackend` maps each allowed AgentService / Health request onto the sandbox, container,
network and storage code and answers with kata-agent's messages and status codes.
:class:`~guest.backend.inprocess.InProcessAgent` is the ttrpc server side (the interceptor first,
then this backend, no second ttrpc hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from guest.api import lookup
from guest.protocols import agent_pb2
from guest.ttrpc import Code, Request, Response, Status

from .cgroups import OomWatcher
from .containers import Containers
from .copyfile import copy_file
from .diagnostics import check_log_type, termination_log
from .errors import AgentError
from .inprocess import health_reply
from .iptables import get_ip_tables, set_ip_tables
from .layout import Layout
from .processes import Reaper, become_subreaper
from .resources import apply_update, plan_update
from .runtime import DEFAULT_RUNTIME, OciRuntime
from .sandbox import Sandbox, guest_details
from .storages import PAUSE_BINARY, Storages

__all__ = ["AgentBackend"]

log = logging.getLogger("guest.backend")

Method = Callable[[Any], Awaitable[Message]]
# Accepted and ignored, as kata-agent does for a confidential guest: nothing the host could use
# them for is wanted here (no hot-plug, no virtio-fs, the guest keeps its own clock).
_NO_OPS = frozenset({"OnlineCPUMem", "MemHotplugByProbe", "RemoveStaleVirtiofsShareMounts",
                     "SetGuestDateTime", "SetPolicy", "UpdateEphemeralMounts"})


FREEZE_TIMEOUT = 10.0


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class AgentBackend:
    def __init__(self, *, layout: Layout | None = None, runtime: Path = DEFAULT_RUNTIME,
                 pause_binary: Path = PAUSE_BINARY,
                 pinned_layers: Callable[[], Sequence[Mapping[str, str]]] = list,
                 subreaper: bool = True) -> None:
        self.layout = layout or Layout()
        self.reaper = Reaper()
        self.oom = OomWatcher()
        self.storages = Storages(self.layout, pinned_layers=pinned_layers, pause_binary=pause_binary)
        self.runtime = OciRuntime(self.reaper, runtime, self.layout.root / "run/crun")
        self.sandbox = Sandbox(self.layout, self.reaper, self.storages)
        self.containers = Containers(self.layout, self.runtime, self.reaper, self.storages, self.oom)
        self.destroyed = asyncio.Event()
        self._subreaper = subreaper
        self._network: Any = None
        self._net_thread: Any = None
        self._methods: dict[str, Method] = {
            "CreateSandbox": self.create_sandbox, "DestroySandbox": self.destroy_sandbox,
            "GetGuestDetails": self.get_guest_details, "CopyFile": self.copy_file,
            "CreateContainer": self.create_container, "StartContainer": self.start_container,
            "RemoveContainer": self.remove_container, "ExecProcess": self.exec_process,
            "SignalProcess": self.signal_process, "WaitProcess": self.wait_process,
            "ReadStdout": self.read_stdout, "ReadStderr": self.read_stderr,
            "WriteStdin": self.write_stdin, "CloseStdin": self.close_stdin,
            "TtyWinResize": self.tty_win_resize, "StatsContainer": self.stats_container,
            "GetOOMEvent": self.get_oom_event, "PauseContainer": self.pause_container,
            "ResumeContainer": self.resume_container, "UpdateInterface": self.update_interface,
            "UpdateRoutes": self.update_routes, "AddARPNeighbors": self.add_arp_neighbors,
            "ReseedRandomDev": self.reseed_random_dev, "GetMetrics": self.get_metrics,
            "UpdateContainer": self.update_container, "GetDiagnosticData": self.get_diagnostic_data,
            "ListInterfaces": self.list_interfaces, "ListRoutes": self.list_routes,
            "GetIPTables": self.get_ip_tables, "SetIPTables": self.set_ip_tables,
        }

    async def start(self) -> None:
        if self._subreaper:
            become_subreaper()
        self.reaper.start()

    async def close(self) -> None:
        self.reaper.stop()
        self.oom.close()
        if self._net_thread is not None:
            if self._network is not None:
                await self._on_network_thread(lambda n: n.close())
            self._net_thread.shutdown(wait=False)

    # -- dispatch -------------------------------------------------------------------------------------
    async def serve(self, request: Request) -> Response:
        rpc = lookup(request.service, request.method)
        if rpc is None:
            return Response(Status(Code.UNIMPLEMENTED, f"{request.method} method"))
        msg = rpc.request_type.FromString(request.payload)  # the interceptor's own re-encoding
        try:
            if request.service == "grpc.Health":
                return health_reply(request.method)
            if request.method in _NO_OPS:
                reply: Message = empty_pb2.Empty()
            else:
                method = self._methods.get(request.method)
                if method is None:
                    return Response(Status(Code.UNIMPLEMENTED,
                                           f"{request.method} is not supported by this agent"))
                reply = await method(msg)
        except AgentError as e:
            log.warning("event=request_failed method=%s code=%s error=%r", request.method, e.code.name,
                        str(e))
            return Response(e.status)
        except OSError as e:
            log.warning("event=request_failed method=%s error=%r", request.method, str(e))
            return Response(Status(Code.INTERNAL, f"{request.method}: {e}"))
        return Response(Status(Code.OK), reply.SerializeToString())

    # -- sandbox --------------------------------------------------------------------------------------
    async def create_sandbox(self, req: agent_pb2.CreateSandboxRequest) -> Message:
        await self.sandbox.create(req)
        return empty_pb2.Empty()

    async def destroy_sandbox(self, req: agent_pb2.DestroySandboxRequest) -> Message:
        errors = []
        ordered = sorted(self.containers.containers.values(), key=lambda c: c.sandbox)  # pause last
        for c in ordered:
            try:
                await self.containers.remove(c.id)
            except AgentError as e:
                errors.append(str(e))
        self.sandbox.destroy()
        self.oom.close()
        self.destroyed.set()
        if errors:
            raise AgentError("; ".join(errors))
        return empty_pb2.Empty()

    async def get_guest_details(self, req: agent_pb2.GuestDetailsRequest) -> Message:
        return guest_details(req)

    async def copy_file(self, req: agent_pb2.CopyFileRequest) -> Message:
        copy_file(self.layout, req)
        return empty_pb2.Empty()

    def _require_sandbox(self) -> None:
        if not self.sandbox.created:
            raise AgentError("sandbox not created", code=Code.FAILED_PRECONDITION)

    # -- containers -----------------------------------------------------------------------------------
    async def create_container(self, req: agent_pb2.CreateContainerRequest) -> Message:
        self._require_sandbox()
        c = await self.containers.create(req, sandbox_id=self.sandbox.id,
                                         namespaces=self.sandbox.namespaces())
        if c.sandbox:
            self.sandbox.pause_pid = c.init.pid
        return empty_pb2.Empty()

    async def start_container(self, req: agent_pb2.StartContainerRequest) -> Message:
        await self.containers.start(req.container_id)
        return empty_pb2.Empty()

    async def remove_container(self, req: agent_pb2.RemoveContainerRequest) -> Message:
        await self.containers.remove(req.container_id, float(req.timeout))
        return empty_pb2.Empty()

    async def exec_process(self, req: agent_pb2.ExecProcessRequest) -> Message:
        await self.containers.exec(req)
        return empty_pb2.Empty()

    async def signal_process(self, req: agent_pb2.SignalProcessRequest) -> Message:
        await self.containers.signal(req)
        return empty_pb2.Empty()

    async def wait_process(self, req: agent_pb2.WaitProcessRequest) -> Message:
        return agent_pb2.WaitProcessResponse(status=await self.containers.wait(req.container_id, req.exec_id))

    async def read_stdout(self, req: agent_pb2.ReadStreamRequest) -> Message:
        return agent_pb2.ReadStreamResponse(data=await self.containers.read(req, stderr=False))

    async def read_stderr(self, req: agent_pb2.ReadStreamRequest) -> Message:
        return agent_pb2.ReadStreamResponse(data=await self.containers.read(req, stderr=True))

    async def write_stdin(self, req: agent_pb2.WriteStreamRequest) -> Message:
        return agent_pb2.WriteStreamResponse(len=await self.containers.write_stdin(req))

    async def close_stdin(self, req: agent_pb2.CloseStdinRequest) -> Message:
        await self.containers.close_stdin(req)
        return empty_pb2.Empty()

    async def tty_win_resize(self, req: agent_pb2.TtyWinResizeRequest) -> Message:
        self.containers.resize(req)
        return empty_pb2.Empty()

    async def stats_container(self, req: agent_pb2.StatsContainerRequest) -> Message:
        return self.containers.stats(req.container_id)

    async def get_oom_event(self, req: agent_pb2.GetOOMEventRequest) -> Message:
        try:
            cid = await self.oom.next()
        except EOFError as e:
            raise AgentError(str(e)) from None
        return agent_pb2.OOMEvent(container_id=cid)

    async def _freeze(self, container_id: str, value: str) -> Message:
        """cgroup v2 freezer; the reply comes once the kernel reports the cgroup (un)frozen, so a
        paused container has made its last step when PauseContainer returns."""
        c = self.containers.get(container_id)
        cgroup = self.containers.cgroup_dir(c.id)
        try:
            (cgroup / "cgroup.freeze").write_text(value)
        except OSError as e:
            raise AgentError(f"freezing {c.id}: {e.strerror}") from e
        deadline = asyncio.get_running_loop().time() + FREEZE_TIMEOUT
        while f"frozen {value}" not in _read_or_empty(cgroup / "cgroup.events").splitlines():
            if asyncio.get_running_loop().time() > deadline:
                raise AgentError(f"{'freezing' if value == '1' else 'thawing'} {c.id}: cgroup not "
                                 f"{'frozen' if value == '1' else 'thawed'} after {FREEZE_TIMEOUT:.0f} s",
                                 code=Code.DEADLINE_EXCEEDED)
            await asyncio.sleep(0.02)
        log.info("event=container_%s container=%s", "paused" if value == "1" else "resumed", c.id)
        return empty_pb2.Empty()

    async def pause_container(self, req: agent_pb2.PauseContainerRequest) -> Message:
        return await self._freeze(req.container_id, "1")

    async def resume_container(self, req: agent_pb2.ResumeContainerRequest) -> Message:
        return await self._freeze(req.container_id, "0")

    async def update_container(self, req: agent_pb2.UpdateContainerRequest) -> Message:
        c = self.containers.get(req.container_id)
        plan = plan_update(req.resources)  # every field checked before anything is written
        apply_update(self.containers.cgroup_dir(c.id), plan)
        return empty_pb2.Empty()

    async def get_diagnostic_data(self, req: agent_pb2.GetDiagnosticDataRequest) -> Message:
        check_log_type(req.log_type)
        c = self.containers.get(req.container_id)
        return agent_pb2.GetDiagnosticDataResponse(data=termination_log(c.spec, self.layout))

    async def get_ip_tables(self, req: agent_pb2.GetIPTablesRequest) -> Message:
        return agent_pb2.GetIPTablesResponse(data=await get_ip_tables(self.reaper, req.is_ipv6))

    async def set_ip_tables(self, req: agent_pb2.SetIPTablesRequest) -> Message:
        return agent_pb2.SetIPTablesResponse(data=await set_ip_tables(self.reaper, req.is_ipv6, req.data))

    # -- network ---------------------------------------------------------------------------------------
    async def _on_network_thread(self, call: Callable[[Any], Any]) -> Any:
        """pyroute2's synchronous API runs an event loop of its own: keep it on one thread of its own."""
        if self._net_thread is None:
            from concurrent.futures import ThreadPoolExecutor

            self._net_thread = ThreadPoolExecutor(1, thread_name_prefix="netlink")

        def run() -> Any:
            if self._network is None:
                from .network import Network

                self._network = Network()
            return call(self._network)

        return await asyncio.get_running_loop().run_in_executor(self._net_thread, run)

    async def update_interface(self, req: agent_pb2.UpdateInterfaceRequest) -> Message:
        result: Message = await self._on_network_thread(lambda n: n.update_interface(req.interface))
        return result

    async def update_routes(self, req: agent_pb2.UpdateRoutesRequest) -> Message:
        result: Message = await self._on_network_thread(lambda n: n.update_routes(req.routes))
        return result

    async def add_arp_neighbors(self, req: agent_pb2.AddARPNeighborsRequest) -> Message:
        await self._on_network_thread(lambda n: n.add_arp_neighbors(req.neighbors))
        return empty_pb2.Empty()

    async def list_interfaces(self, req: agent_pb2.ListInterfacesRequest) -> Message:
        from .network import list_interfaces

        result: Message = await self._on_network_thread(list_interfaces)
        return result

    async def list_routes(self, req: agent_pb2.ListRoutesRequest) -> Message:
        from .network import list_routes

        result: Message = await self._on_network_thread(list_routes)
        return result

    async def get_metrics(self, req: agent_pb2.GetMetricsRequest) -> Message:
        """kata-agent's metric names for the agent process (Prometheus text), plus the container count."""
        import psutil

        from common.metrics import render_family

        me = psutil.Process()
        mem, cpu = me.memory_info(), me.cpu_times()
        text = "".join([
            render_family("kata_agent_process_resident_memory_bytes", "gauge", "Agent resident memory.",
                          [((), mem.rss)]),
            render_family("kata_agent_process_cpu_seconds_total", "counter", "Agent CPU time.",
                          [((), cpu.user + cpu.system)]),
            render_family("kata_agent_containers", "gauge", "Containers the agent runs.",
                          [((), len(self.containers.containers))]),
        ])
        return agent_pb2.Metrics(metrics=text)

    async def reseed_random_dev(self, req: agent_pb2.ReseedRandomDevRequest) -> Message:
        # Mixed into the pool without crediting entropy: host data can never weaken it.
        with contextlib.suppress(OSError), open("/dev/urandom", "wb") as f:
            f.write(req.data[:4096])
        return empty_pb2.Empty()


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
