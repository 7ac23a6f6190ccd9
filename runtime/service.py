"""containerd's task service (containerd.task.v2.Task) mapped onto the guest agent.

One shim daemon serves one sandbox (one pod VM). The mapping follows Kata's runtime:
- the first Create of a sandbox boots the VM, checks the agent's health, sends CreateSandbox and
  creates the sandbox (pause) container with an ``image_guest_pull`` storage of source ``pause``;
  a CRI sandbox task *is* that pause container. A container without CRI annotations (``ctr run``)
  is its own sandbox: the shim creates a pause container under a sandbox id derived from the
  task id, then the container itself, exactly as if a pod held it;
- a workload container (``io.kubernetes.cri.container-type=container``) is CreateContainer with
  the bundle's spec and its image as an ``image_guest_pull`` storage (the reference with digest);
- Start is StartContainer, then ReadStdout/ReadStderr into the FIFOs and, once they end,
  WaitProcess, whose status becomes TaskExit; Kill is SignalProcess; Exec + Start(exec) is
  ExecProcess; Delete of the init process is RemoveContainer, of the sandbox DestroySandbox and
  the VM's end. A VM that dies is reported as an exit (255) of every process still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from attestation import initdata as initdata_format
from guest.protocols import agent_pb2, oci_pb2
from guest.storage import IMAGE_STORE_ANNOTATION, IMAGE_STORE_PCI_PATH, image_store_storage
from guest.ttrpc import Code, Request, Status, TtrpcError

from . import validate
from .agent import AgentClient
from .config import Config, config_path, load_config
from .devices import block_devices, image_store_size
from .emptydir import EmptyDirDisks
from .errors import (
    AlreadyExistsError,
    ConfigError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    ShimError,
)
from .events import Publisher
from .kataspec import annotate, dns_lines, guest_rootfs, kata_exec_process, kata_spec
from .layers import ImageLayers, fetch_layers
from .network import PodNetwork, sandbox_netns
from .podvm import (
    AGENT_PORT,
    HotpluggedDisk,
    PodVM,
    VmLaunch,
    load_image,
    resolve_accel,
    write_initdata_image,
)
from .protocols import cgroups_pb2, events_pb2, runtimeoptions_pb2, shim_pb2, task_pb2
from .share import share_bind_mounts
from .spec import spec_from_json
from .stdio import copy_input, copy_output, release_fifos

__all__ = ["SERVICE", "TaskService"]

log = logging.getLogger("runtime.service")

SERVICE = "containerd.task.v2.Task"
VERSION = "contrast-cc 0.1"
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
IMAGE_NAME = "io.kubernetes.cri.image-name"
INITDATA_ANNOTATION = initdata_format.ANNOTATION
POLICY_ANNOTATION = "io.katacontainers.config.agent.policy"
SHM_STORAGE = agent_pb2.Storage(
    driver="ephemeral",
    source="shm",
    fstype="tmpfs",
    mount_point="/run/kata-containers/sandbox/shm",
    options=["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"],
)
VM_EXIT_STATUS = 255
MAX_RESOLV_CONF = 64 << 10


def metrics_from_agent(reply: agent_pb2.StatsContainerResponse) -> cgroups_pb2.Metrics:
    """The agent's cgroup statistics (v1-shaped, nanoseconds) as containerd's cgroup v2 metrics."""
    cg = reply.cgroup_stats
    cpu, thr, mem = cg.cpu_stats.cpu_usage, cg.cpu_stats.throttling_data, cg.memory_stats
    st = mem.stats
    own = ("usage", "max_usage", "usage_limit", "swap_usage", "swap_limit")
    memory = cgroups_pb2.MemoryStat(
        usage=mem.usage.usage,
        max_usage=mem.usage.max_usage,
        usage_limit=mem.usage.limit,
        swap_usage=mem.swap_usage.usage,
        swap_limit=mem.swap_usage.limit,
        **{k: st[k] for k in cgroups_pb2.MemoryStat.DESCRIPTOR.fields_by_name if k in st and k not in own},
    )
    return cgroups_pb2.Metrics(
        pids=cgroups_pb2.PidsStat(current=cg.pids_stats.current, limit=cg.pids_stats.limit),
        cpu=cgroups_pb2.CPUStat(
            usage_usec=cpu.total_usage // 1000,
            user_usec=cpu.usage_in_usermode // 1000,
            system_usec=cpu.usage_in_kernelmode // 1000,
            nr_periods=thr.periods,
            nr_throttled=thr.throttled_periods,
            throttled_usec=thr.throttled_time // 1000,
        ),
        memory=memory,
    )


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


@dataclass
class Proc:
    container_id: str
    exec_id: str  # "" = the container's init process
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    spec: oci_pb2.Process | None = None
    status: int = task_pb2.CREATED
    exit_status: int = 0
    exited_at: timestamp_pb2.Timestamp | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    stdin_closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def agent_exec_id(self) -> str:
        return self.exec_id or self.container_id

    def exit(self, status: int) -> bool:
        if self.status == task_pb2.STOPPED:
            return False
        self.status, self.exit_status, self.exited_at = task_pb2.STOPPED, status, _now()
        self.exited.set()
        return True


@dataclass
class Container:
    id: str
    bundle: Path
    init: Proc
    execs: dict[str, Proc] = field(default_factory=dict)
    in_agent: bool = False  # CreateContainer succeeded
    disks: list[HotpluggedDisk] = field(default_factory=list)  # hotplugged for its linux.devices
    is_sandbox: bool = False


@dataclass
class Sandbox:
    id: str
    workdir: Path
    vm: PodVM
    agent: AgentClient
    pause_created: bool = False
    destroyed: bool = False
    network: PodNetwork | None = None  # the pod netns's veth joined to the VM's tap (CNI pods)
    empty_dirs: EmptyDirDisks | None = None  # block-encrypted emptyDirs (emptydir_mode)


class TaskService:
    def __init__(
        self,
        *,
        namespace: str,
        publisher: Publisher,
        state_dir: Path,
        on_shutdown: Callable[[], None],
        containerd: tuple[str, str] | None = None,  # (ctr binary, containerd address) for host-EROFS
    ) -> None:
        self.containerd = containerd
        self.layers: dict[str, ImageLayers] = {}
        self.attached: list[str] = []  # layer images on the VM's disks vdc, vdd, ... in this order
        self.layer_disks: dict[str, str] = {}  # layer images hotplugged later → their PCI path
        self.namespace = namespace
        self.publisher = publisher
        self.state_dir = state_dir
        self.on_shutdown = on_shutdown
        self.containers: dict[str, Container] = {}
        self.sandbox: Sandbox | None = None
        self._lock = asyncio.Lock()
        self._vm_watch: asyncio.Task[None] | None = None

    # -- wiring ------------------------------------------------------------------------------------

    def handlers(self) -> dict[tuple[str, str], Callable[[Request], Awaitable[bytes]]]:
        table: dict[str, tuple[type[Message], Callable[[Any], Awaitable[Message]]]] = {
            "Create": (shim_pb2.CreateTaskRequest, self.create),
            "Start": (shim_pb2.StartRequest, self.start),
            "State": (shim_pb2.StateRequest, self.state),
            "Delete": (shim_pb2.DeleteRequest, self.delete),
            "Kill": (shim_pb2.KillRequest, self.kill),
            "Wait": (shim_pb2.WaitRequest, self.wait),
            "Pids": (shim_pb2.PidsRequest, self.pids),
            "Stats": (shim_pb2.StatsRequest, self.stats),
            "Connect": (shim_pb2.ConnectRequest, self.connect),
            "Shutdown": (shim_pb2.ShutdownRequest, self.shutdown),
            "Exec": (shim_pb2.ExecProcessRequest, self.exec),
            "ResizePty": (shim_pb2.ResizePtyRequest, self.resize_pty),
            "CloseIO": (shim_pb2.CloseIORequest, self.close_io),
            "Update": (shim_pb2.UpdateTaskRequest, self.update),
            "Pause": (shim_pb2.PauseRequest, self.unsupported),
            "Resume": (shim_pb2.ResumeRequest, self.unsupported),
            "Checkpoint": (shim_pb2.CheckpointTaskRequest, self.unsupported),
        }

        def wrap(
            name: str, kind: type[Message], fn: Callable[[Message], Awaitable[Message]]
        ) -> Callable[[Request], Awaitable[bytes]]:
            async def handler(req: Request) -> bytes:
                msg = kind()
                try:
                    msg.ParseFromString(req.payload)
                except Exception:
                    raise TtrpcError(Status(Code.INVALID_ARGUMENT, f"{name}: undecodable request")) from None
                log.debug("event=call method=%s", name)
                try:
                    reply = await fn(msg)
                except ShimError as e:
                    log.warning("event=call_failed method=%s code=%s error=%s", name, e.code.name, e.message)
                    raise
                except TtrpcError as e:
                    log.warning(
                        "event=agent_failed method=%s code=%s error=%s", name, e.code.name, e.status.message
                    )
                    raise
                return reply.SerializeToString()

            return handler

        return {(SERVICE, name): wrap(name, kind, fn) for name, (kind, fn) in table.items()}

    # -- lookups ------------------------------------------------------------------------------------

    def _container(self, cid: str) -> Container:
        validate.check_id(cid)
        c = self.containers.get(cid)
        if c is None:
            raise NotFoundError(f"container {cid}: not found")
        return c

    def _proc(self, cid: str, exec_id: str) -> tuple[Container, Proc]:
        c = self._container(cid)
        if not exec_id:
            return c, c.init
        validate.check_exec_id(exec_id)
        p = c.execs.get(exec_id)
        if p is None:
            raise NotFoundError(f"process {exec_id} of container {cid}: not found")
        return c, p

    def _agent(self) -> AgentClient:
        sb = self.sandbox
        if sb is None or sb.destroyed or (sb.vm.exited is not None and sb.vm.exited.done()):
            raise FailedPreconditionError("the pod VM is not running")
        return sb.agent

    # -- Create -------------------------------------------------------------------------------------

    async def create(self, req: shim_pb2.CreateTaskRequest) -> shim_pb2.CreateTaskResponse:
        cid = validate.check_id(req.id)
        bundle = validate.check_bundle(req.bundle, cid)
        if req.checkpoint or req.parent_checkpoint:
            raise InvalidInputError(
                "checkpoint", req.checkpoint or req.parent_checkpoint, "none (not supported)"
            )
        stdio = [
            validate.check_fifo(p, w)
            for p, w in ((req.stdin, "stdin"), (req.stdout, "stdout"), (req.stderr, "stderr"))
        ]
        raw = validate.read_spec(bundle)
        try:
            annotations = validate.check_annotations(json.loads(raw).get("annotations"))
        except (ValueError, AttributeError):
            raise InvalidInputError(
                "bundle config.json", str(bundle / "config.json"), "a JSON object"
            ) from None
        spec = spec_from_json(raw)
        async with self._lock:
            if cid in self.containers:
                raise AlreadyExistsError(f"container {cid}: already exists")
            kind = annotations.get(CONTAINER_TYPE, "")
            if kind not in ("", "sandbox", "container"):
                raise InvalidInputError(f"annotation {CONTAINER_TYPE}", kind, "sandbox or container")
            if kind == "container":
                sid = validate.check_id(annotations.get(SANDBOX_ID, ""), f"annotation {SANDBOX_ID}")
                if self.sandbox is None or self.sandbox.id != sid:
                    raise FailedPreconditionError(
                        f"sandbox {sid} of container {cid} is not served by this shim"
                    )
            elif self.sandbox is not None:
                raise FailedPreconditionError(f"this shim already serves sandbox {self.sandbox.id}")
            proc = Proc(cid, "", req.stdin, req.stdout, req.stderr, req.terminal, spec.Process)
            container = Container(cid, bundle, proc, is_sandbox=kind == "sandbox")
            config = self._config(req.options)
            layer_paths: tuple[Path, ...] = ()
            if config.image_mode == "host-erofs":
                if self.containerd is None:
                    raise ConfigError("host-erofs mode needs containerd's address and its ctr client")
                ctr, address = self.containerd
                self.layers[cid] = await fetch_layers(ctr, address, self.namespace, config.layer_cache, cid)
                if kind == "container":
                    # The VM booted with the sandbox image's layers; a container's other layers are
                    # hotplugged read-only (once per VM, shared like the boot ones) and named by
                    # their PCI path.
                    assert self.sandbox is not None
                    for x in self.layers[cid].layers:
                        if x.path not in self.attached and x.path not in self.layer_disks:
                            disk = await self.sandbox.vm.attach_disk(
                                Path(x.path), readonly=True, block_device=False
                            )
                            self.layer_disks[x.path] = disk.pci_path
                else:
                    self.attached = [x.path for x in self.layers[cid].layers]
                    layer_paths = tuple(Path(p) for p in self.attached)
            if kind in ("", "sandbox"):
                sid = cid if kind == "sandbox" else "cc-" + hashlib.sha256(cid.encode()).hexdigest()[:32]
                await self._start_sandbox(
                    sid, config, annotations, spec, layer_paths, container if kind == "sandbox" else None
                )
            self.containers[cid] = container
            try:
                if kind == "sandbox":
                    container.in_agent = True  # the pause container created with the sandbox
                else:
                    await self._create_container(container, spec, annotations, config, stdio[0] is not None)
            except BaseException:
                del self.containers[cid]
                if kind == "":
                    await self._teardown_sandbox()
                raise
        self.publisher.publish(
            events_pb2.TaskCreate(
                container_id=cid,
                bundle=str(bundle),
                rootfs=req.rootfs,
                pid=self._pid(),
                io=events_pb2.TaskIO(
                    stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal
                ),
            )
        )
        return shim_pb2.CreateTaskResponse(pid=self._pid())

    def _pid(self) -> int:
        return self.sandbox.vm.pid if self.sandbox is not None else 0

    def _config(self, options: object) -> Config:
        path = ""
        any_msg = options
        if any_msg is not None and getattr(any_msg, "type_url", None):
            opts = runtimeoptions_pb2.Options()
            if not any_msg.type_url.endswith("runtimeoptions.v1.Options"):  # type: ignore[attr-defined]
                raise InvalidInputError(
                    "runtime options type",
                    any_msg.type_url,  # type: ignore[attr-defined]
                    "runtimeoptions.v1.Options (ConfigPath)",
                )
            try:
                opts.ParseFromString(any_msg.value)  # type: ignore[attr-defined]
            except Exception:
                raise InvalidInputError(
                    "runtime options", "undecodable", "runtimeoptions.v1.Options"
                ) from None
            path = opts.config_path
        return load_config(config_path(path))

    def _initdata(self, config: Config, annotations: dict[str, str]) -> bytes:
        value = annotations.get(INITDATA_ANNOTATION)
        if value is not None:
            try:
                raw = initdata_format.decode_annotation(value)
                initdata_format.parse(raw)
            except initdata_format.InitdataError as e:
                raise InvalidInputError(
                    f"annotation {INITDATA_ANNOTATION}",
                    value[:40] + "...",
                    f"base64(gzip(initdata TOML)) ({e})",
                ) from None
            return raw
        if config.default_initdata is None:
            raise ConfigError(
                f"pod has no {INITDATA_ANNOTATION} annotation and the runtime configuration "
                f"{config.path} names no [initdata] default: refused"
            )
        try:
            return config.default_initdata.read_bytes()
        except OSError as e:
            raise ConfigError(f"initdata.default {config.default_initdata}: {e.strerror}") from None

    async def _start_sandbox(
        self,
        sid: str,
        config: Config,
        annotations: dict[str, str],
        spec: oci_pb2.Spec,
        layers: tuple[Path, ...] = (),
        sandbox_container: Container | None = None,
    ) -> None:
        if POLICY_ANNOTATION in annotations:
            # The policy reaches the guest only inside the measured initdata; a SetPolicy from the
            # host would be unmeasured.
            raise InvalidInputError(
                f"annotation {POLICY_ANNOTATION}",
                "(set)",
                "no policy annotation: the policy goes into the initdata",
            )
        raw_initdata = self._initdata(config, annotations)
        image = load_image(config)
        netns = sandbox_netns(spec.Linux.Namespaces)  # checked (and joined) before any file is written
        network = await PodNetwork.connect(netns) if netns is not None else None
        workdir = self.state_dir / "vm"
        try:
            workdir.mkdir(mode=0o700, exist_ok=True)
            digest = write_initdata_image(raw_initdata, workdir / "initdata.img")
        except BaseException:
            if network is not None:
                await network.close()
            raise
        launch = VmLaunch(
            config=config,
            image=image,
            initdata_digest=digest,
            initdata_image=workdir / "initdata.img",
            workdir=workdir,
            accel=resolve_accel(config),
            layers=layers,
            nic=network.nic if network is not None else None,
        )
        vm = PodVM(launch)
        agent = AgentClient(config.create_container_timeout)
        self.sandbox = Sandbox(sid, workdir, vm, agent, network=network)
        if config.emptydir_mode == "block-encrypted":
            async def attach(path: Path) -> str:
                return (await vm.attach_disk(path, readonly=False, block_device=False)).pci_path

            self.sandbox.empty_dirs = EmptyDirDisks(attach, config.emptydir_size_mib)
        try:
            await vm.start()
            if network is not None:
                network.release_tap()
            self._vm_watch = asyncio.get_running_loop().create_task(self._watch_vm())
            dial = asyncio.ensure_future(agent.connect(vm.agent_socket, AGENT_PORT, config.dial_timeout))
            assert vm.exited is not None
            racers: set[asyncio.Future[Any]] = {dial, vm.exited}
            done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
            if dial not in done:
                dial.cancel()
                raise FailedPreconditionError(
                    f"pod VM exited before its agent answered; console: {vm.console_tail(600)!r}"
                )
            dial.result()
            try:
                await agent.check()
            except TtrpcError as e:
                raise FailedPreconditionError(
                    f"Failed to Check if grpc server is working: {e.status.message}"
                ) from None
            if network is not None:
                await network.configure_guest(agent)
            hostname = spec.Hostname[:64]  # as Kata: the spec's, cut to 64; none stays none
            storages = [SHM_STORAGE, *await self._image_store(vm, workdir, annotations)]
            await agent.call(
                "CreateSandbox",
                agent_pb2.CreateSandboxRequest(
                    hostname=hostname,
                    dns=self._sandbox_dns(spec),
                    storages=storages,
                    sandbox_pidns=False,
                    sandbox_id=sid,
                ),
                empty_pb2.Empty,
            )
            if sandbox_container is not None:
                # A CRI sandbox: containerd's sandbox spec, rewritten as Kata's runtime does.
                pause = await self._kata_request(sandbox_container, spec, config, "")
            else:
                pause = self._pause_request(sid, hostname)
            await agent.call("CreateContainer", pause, empty_pb2.Empty)
            self.sandbox.pause_created = True
            await agent.call(
                "StartContainer", agent_pb2.StartContainerRequest(container_id=sid), empty_pb2.Empty
            )
        except BaseException:
            await self._teardown_sandbox()
            raise

    @staticmethod
    def _sandbox_dns(spec: oci_pb2.Spec) -> list[str]:
        """The lines of the sandbox's resolv.conf (the source of its /etc/resolv.conf bind), as Kata."""
        for m in spec.Mounts:
            if m.destination == "/etc/resolv.conf":
                try:
                    # Non-blocking, and only a regular file is read: a FIFO or device at the source
                    # would otherwise stall the shim's event loop in open() or read().
                    fd = os.open(m.source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                    with os.fdopen(fd, "rb") as f:
                        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                            raise InvalidInputError("sandbox resolv.conf", m.source, "a regular file")
                        content = f.read(MAX_RESOLV_CONF + 1)
                except OSError as e:
                    expected = f"a readable file ({e.strerror})"
                    raise InvalidInputError("sandbox resolv.conf", m.source, expected) from None
                if len(content) > MAX_RESOLV_CONF:
                    expected = f"at most {MAX_RESOLV_CONF} bytes"
                    raise InvalidInputError("sandbox resolv.conf", m.source, expected)
                return dns_lines(content, m.source)
        return []

    async def _image_store(
        self, vm: PodVM, workdir: Path, annotations: dict[str, str]
    ) -> list[agent_pb2.Storage]:
        """Contrast's secure image store, when the pod asks for it: a sparse scratch disk file of the
        asked size, hotplugged as the VM's first disk (the PCI path the policy pins); the guest
        formats it with a key born in the VM and pulls images onto it instead of into RAM."""
        size = image_store_size(annotations.get(IMAGE_STORE_ANNOTATION, "0"))
        if not size:
            return []
        disk = workdir / "image-store.raw"
        fd = os.open(disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        hotplugged = await vm.attach_disk(disk, readonly=False, block_device=False)
        if hotplugged.pci_path != IMAGE_STORE_PCI_PATH:
            raise FailedPreconditionError(
                f"image store: hotplugged at {hotplugged.pci_path}, the policy expects {IMAGE_STORE_PCI_PATH}"
            )
        fields = image_store_storage()
        return [
            agent_pb2.Storage(
                driver=str(fields["driver"]),
                driver_options=list(fields["driver_options"]),  # type: ignore[call-overload]
                source=str(fields["source"]),
                fstype=str(fields["fstype"]),
                mount_point=str(fields["mount_point"]),
            )
        ]

    def _pause_request(self, sid: str, hostname: str) -> agent_pb2.CreateContainerRequest:
        annotations = {CONTAINER_TYPE: "sandbox", SANDBOX_ID: sid}
        meta = json.dumps({"metadata": annotations}, separators=(",", ":"))
        storage = agent_pb2.Storage(
            driver="image_guest_pull",
            driver_options=[f"image_guest_pull={meta}"],
            source="pause",
            fstype="overlay",
            mount_point=f"/run/kata-containers/{sid}/rootfs",
        )
        spec = oci_pb2.Spec(
            Version="1.1.0",
            Hostname=hostname,
            Annotations=annotations,
            Root=oci_pb2.Root(Path=f"/run/kata-containers/{sid}/rootfs", Readonly=True),
            Process=oci_pb2.Process(
                Args=["/pause"],
                Cwd="/",
                User=oci_pb2.User(UID=65535, GID=65535),
                NoNewPrivileges=True,
                Env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            ),
            Linux=oci_pb2.Linux(Namespaces=[oci_pb2.LinuxNamespace(Type=t) for t in ("ipc", "uts", "mount")]),
        )
        return agent_pb2.CreateContainerRequest(container_id=sid, exec_id=sid, storages=[storage], OCI=spec)

    def _rootfs_storages(
        self, cid: str, config: Config, annotations: dict[str, str], image: str, sandbox: bool
    ) -> list[agent_pb2.Storage]:
        """The container's rootfs as Kata's runtime sends it: an ``image_guest_pull`` storage (the
        sandbox's is the guest's pause bundle, source ``pause``) or, host-EROFS, one
        ``erofs.multi-layer`` storage per layer of the container's image, lowest first."""
        rootfs = guest_rootfs(cid)
        if config.image_mode == "guest-pull":
            meta = json.dumps({"metadata": dict(annotations)}, separators=(",", ":"), sort_keys=True)
            return [
                agent_pb2.Storage(
                    driver="image_guest_pull",
                    driver_options=[f"image_guest_pull={meta}"],
                    source="pause" if sandbox else image,
                    fstype="overlay",
                    mount_point=rootfs,
                )
            ]
        # Disks: vda the image, vdb the initdata, then the layers attached at boot; layers hotplugged
        # later are named by their PCI path.
        return [
            agent_pb2.Storage(
                driver="erofs.multi-layer",
                source=self.layer_disks[layer.path]
                if layer.path not in self.attached
                else f"/dev/vd{chr(ord('c') + self.attached.index(layer.path))}",
                fstype="erofs",
                options=list(layer.options),
                mount_point=rootfs,
            )
            for layer in self.layers[cid].layers
        ]

    async def _kata_request(
        self, c: Container, spec: oci_pb2.Spec, config: Config, image: str
    ) -> agent_pb2.CreateContainerRequest:
        """containerd's spec rewritten as Kata's runtime rewrites it (``kataspec``), the bind mounts
        copied into the guest first, and the rootfs storages."""
        annotate(spec, str(c.bundle), c.is_sandbox)
        storages = self._rootfs_storages(c.id, config, dict(spec.Annotations), image, c.is_sandbox)
        # Disk emptyDirs (block-encrypted mode) become disks of the VM encrypted there ...
        if self.sandbox is not None and self.sandbox.empty_dirs is not None and not c.is_sandbox:
            storages += await self.sandbox.empty_dirs.rewrite(spec)
        # ... and with no shared filesystem the other bind-mounted host files are copied into the
        # guest (CopyFile); memory emptyDirs become ephemeral storages.
        storages += await share_bind_mounts(self._agent().call, c.id, spec)
        rewritten = kata_spec(spec, c.id)
        return agent_pb2.CreateContainerRequest(
            container_id=c.id,
            exec_id=c.id,
            storages=storages,
            OCI=rewritten.spec,
            sandbox_pidns=rewritten.sandbox_pidns,
        )

    async def _create_container(
        self, c: Container, spec: oci_pb2.Spec, annotations: dict[str, str], config: Config, has_stdin: bool
    ) -> None:
        assert self.sandbox is not None
        sid = self.sandbox.id
        image = annotations.get(IMAGE_NAME, "")
        if config.image_mode == "guest-pull" and "@sha256:" not in image:
            raise InvalidInputError(
                f"annotation {IMAGE_NAME}",
                image,
                "an image reference with its digest (name@sha256:...) for guest pull",
            )
        if CONTAINER_TYPE not in spec.Annotations:
            # A ctr-run container: the annotations a CRI container carries, so one policy shape
            # covers both.
            spec.Annotations[CONTAINER_TYPE] = "container"
            spec.Annotations[SANDBOX_ID] = sid
            spec.Annotations[IMAGE_NAME] = image or self.layers[c.id].image
        request = await self._kata_request(c, spec, config, image)
        request.devices.extend(await self._attach_devices(c, request.OCI))
        try:
            await self._agent().call("CreateContainer", request, empty_pb2.Empty)
        except BaseException:
            await self._detach_devices(c)
            raise
        c.in_agent = True

    async def _attach_devices(self, c: Container, spec: oci_pb2.Spec) -> list[agent_pb2.Device]:
        """Hotplug the spec's block devices (each checked first) and name them as Kata does."""
        assert self.sandbox is not None
        checked = block_devices(spec)
        out = []
        try:
            for d in checked:
                disk = await self.sandbox.vm.attach_disk(d.host_path, readonly=False, block_device=True)
                c.disks.append(disk)
                out.append(
                    agent_pb2.Device(
                        id=disk.device, type="blk", vm_path=disk.pci_path, container_path=d.container_path
                    )
                )
        except BaseException:
            await self._detach_devices(c)
            raise
        return out

    async def _detach_devices(self, c: Container) -> None:
        if self.sandbox is not None and self._vm_alive():
            for disk in c.disks:
                await self.sandbox.vm.detach_disk(disk)
        c.disks.clear()

    # -- Start / Exec -------------------------------------------------------------------------------

    async def start(self, req: shim_pb2.StartRequest) -> shim_pb2.StartResponse:
        c, p = self._proc(req.id, req.exec_id)
        if p.status != task_pb2.CREATED:
            raise FailedPreconditionError(f"process {p.agent_exec_id} of {c.id}: not in the created state")
        agent = self._agent()
        try:
            if c.is_sandbox and not p.exec_id:
                pass  # the pause container was started with the sandbox
            elif not p.exec_id:
                await agent.call(
                    "StartContainer", agent_pb2.StartContainerRequest(container_id=c.id), empty_pb2.Empty
                )
            else:
                assert p.spec is not None
                await agent.call(
                    "ExecProcess",
                    agent_pb2.ExecProcessRequest(
                        container_id=c.id, exec_id=p.exec_id, process=kata_exec_process(p.spec)
                    ),
                    empty_pb2.Empty,
                )
        except TtrpcError:
            self._release_stdio(p)
            raise
        p.status = task_pb2.RUNNING
        loop = asyncio.get_running_loop()
        p.tasks.append(loop.create_task(self._run_process(c, p)))
        if p.exec_id:
            self.publisher.publish(
                events_pb2.TaskExecStarted(container_id=c.id, exec_id=p.exec_id, pid=self._pid())
            )
        else:
            self.publisher.publish(events_pb2.TaskStart(container_id=c.id, pid=self._pid()))
        return shim_pb2.StartResponse(pid=self._pid())

    @staticmethod
    def _release_stdio(p: Proc) -> None:
        def fifo(path: str, what: str) -> Path | None:
            try:
                return validate.check_fifo(path, what)
            except ShimError:  # gone or replaced since Create: nothing of ours to close
                return None

        release_fifos([fifo(p.stdout, "stdout"), fifo(p.stderr, "stderr")], fifo(p.stdin, "stdin"))

    async def _run_process(self, c: Container, p: Proc) -> None:
        agent = self._agent()
        eid = p.agent_exec_id
        copies = []
        if not (c.is_sandbox and not p.exec_id):
            out = validate.check_fifo(p.stdout, "stdout")
            err = validate.check_fifo(p.stderr, "stderr")
            inp = validate.check_fifo(p.stdin, "stdin")
            copies.append(copy_output(agent, "ReadStdout", c.id, eid, out))
            if not p.terminal:
                copies.append(copy_output(agent, "ReadStderr", c.id, eid, err))
            if inp is not None:
                asyncio.get_running_loop().create_task(copy_input(agent, c.id, eid, inp, p.stdin_closed))
        await asyncio.gather(*copies)
        try:
            reply = await agent.call(
                "WaitProcess",
                agent_pb2.WaitProcessRequest(container_id=c.id, exec_id=eid),
                agent_pb2.WaitProcessResponse,
            )
            status = reply.status & 0xFFFFFFFF
        except TtrpcError as e:
            log.warning("event=wait_failed cid=%s exec=%s error=%r", c.id, eid, e.status.message)
            status = VM_EXIT_STATUS
        self._exited(c, p, status)

    def _exited(self, c: Container, p: Proc, status: int) -> None:
        if p.exit(status):
            log.info("event=process_exited cid=%s exec=%s status=%d", c.id, p.agent_exec_id, status)
            self.publisher.publish(
                events_pb2.TaskExit(
                    container_id=c.id,
                    id=p.exec_id or c.id,
                    pid=self._pid(),
                    exit_status=status,
                    exited_at=p.exited_at,
                )
            )

    async def exec(self, req: shim_pb2.ExecProcessRequest) -> empty_pb2.Empty:
        c = self._container(req.id)
        eid = validate.check_exec_id(req.exec_id)
        if eid in c.execs or eid == c.id:
            raise AlreadyExistsError(f"process {eid} of container {c.id}: already exists")
        for path, what in ((req.stdin, "stdin"), (req.stdout, "stdout"), (req.stderr, "stderr")):
            validate.check_fifo(path, what)
        proc_spec = oci_pb2.Process()
        if req.spec.value:
            from .spec import _convert  # the runtime-spec Process JSON, same rules as the spec

            try:
                doc = json.loads(req.spec.value)
            except ValueError:
                raise InvalidInputError("exec spec", "not JSON", "a runtime-spec process object") from None
            from google.protobuf import json_format

            json_format.ParseDict(_convert(doc, oci_pb2.Process.DESCRIPTOR, "process", []), proc_spec)
        c.execs[eid] = Proc(c.id, eid, req.stdin, req.stdout, req.stderr, req.terminal, proc_spec)
        self.publisher.publish(events_pb2.TaskExecAdded(container_id=c.id, exec_id=eid))
        return empty_pb2.Empty()

    # -- State / Wait / Kill / Pids / Stats ---------------------------------------------------------

    async def state(self, req: shim_pb2.StateRequest) -> shim_pb2.StateResponse:
        c, p = self._proc(req.id, req.exec_id)
        return shim_pb2.StateResponse(
            id=c.id,
            bundle=str(c.bundle),
            pid=self._pid(),
            status=p.status,  # type: ignore[arg-type]
            stdin=p.stdin,
            stdout=p.stdout,
            stderr=p.stderr,
            terminal=p.terminal,
            exit_status=p.exit_status,
            exited_at=p.exited_at,
            exec_id=p.exec_id,
        )

    async def wait(self, req: shim_pb2.WaitRequest) -> shim_pb2.WaitResponse:
        _, p = self._proc(req.id, req.exec_id)
        await p.exited.wait()
        return shim_pb2.WaitResponse(exit_status=p.exit_status, exited_at=p.exited_at)

    async def kill(self, req: shim_pb2.KillRequest) -> empty_pb2.Empty:
        c, p = self._proc(req.id, req.exec_id)
        if not 1 <= req.signal <= 64:
            raise InvalidInputError("signal", req.signal, "1..64")
        if p.status == task_pb2.STOPPED:
            return empty_pb2.Empty()
        if p.status == task_pb2.CREATED and (not c.in_agent or p.exec_id):
            # Nothing runs in the guest (a container never created there, an exec never started,
            # e.g. refused by the policy): the kill ends it here, so a Wait does not hang.
            self._exited(c, p, 128 + req.signal)
            return empty_pb2.Empty()
        sandbox_kill = c.is_sandbox and not p.exec_id
        target = c.id if not sandbox_kill else self.sandbox.id if self.sandbox else c.id
        exec_id = "" if (req.all or not p.exec_id) else p.exec_id
        await self._agent().signal(target, exec_id, req.signal)
        return empty_pb2.Empty()

    async def pids(self, req: shim_pb2.PidsRequest) -> shim_pb2.PidsResponse:
        c = self._container(req.id)
        return shim_pb2.PidsResponse(processes=[task_pb2.ProcessInfo(pid=self._pid())] if c else [])

    async def stats(self, req: shim_pb2.StatsRequest) -> shim_pb2.StatsResponse:
        c = self._container(req.id)
        target = self.sandbox.id if c.is_sandbox and self.sandbox is not None else c.id
        reply = await self._agent().call(
            "StatsContainer",
            agent_pb2.StatsContainerRequest(container_id=target),
            agent_pb2.StatsContainerResponse,
        )
        metrics = metrics_from_agent(reply)
        return shim_pb2.StatsResponse(
            stats=any_pb2.Any(type_url=metrics.DESCRIPTOR.full_name, value=metrics.SerializeToString())
        )

    async def connect(self, req: shim_pb2.ConnectRequest) -> shim_pb2.ConnectResponse:
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=self._pid(), version=VERSION)

    async def resize_pty(self, req: shim_pb2.ResizePtyRequest) -> empty_pb2.Empty:
        c, p = self._proc(req.id, req.exec_id)
        await self._agent().call(
            "TtyWinResize",
            agent_pb2.TtyWinResizeRequest(
                container_id=c.id, exec_id=p.agent_exec_id, row=req.height, column=req.width
            ),
            empty_pb2.Empty,
        )
        return empty_pb2.Empty()

    async def close_io(self, req: shim_pb2.CloseIORequest) -> empty_pb2.Empty:
        _, p = self._proc(req.id, req.exec_id)
        if req.stdin:
            p.stdin_closed.set()
        return empty_pb2.Empty()

    async def update(self, req: shim_pb2.UpdateTaskRequest) -> empty_pb2.Empty:
        self._container(req.id)
        raise TtrpcError(Status(Code.UNIMPLEMENTED, "Update: resources are static in a confidential pod VM"))

    async def unsupported(self, req: Message) -> empty_pb2.Empty:
        raise TtrpcError(
            Status(Code.UNIMPLEMENTED, f"{type(req).__name__}: not supported by a confidential pod")
        )

    # -- Delete / Shutdown --------------------------------------------------------------------------

    async def delete(self, req: shim_pb2.DeleteRequest) -> shim_pb2.DeleteResponse:
        c, p = self._proc(req.id, req.exec_id)
        if p.status == task_pb2.RUNNING:
            raise FailedPreconditionError(f"process {p.agent_exec_id} of {c.id} is running: kill it first")
        if p.exec_id:
            del c.execs[p.exec_id]
        else:
            if c.in_agent and not c.is_sandbox and self._vm_alive():
                with contextlib.suppress(TtrpcError, ShimError):
                    await self._agent().call(
                        "RemoveContainer",
                        agent_pb2.RemoveContainerRequest(container_id=c.id, timeout=0),
                        empty_pb2.Empty,
                    )
                await self._detach_devices(c)
            del self.containers[c.id]
            if c.is_sandbox or not self.containers:
                await self._teardown_sandbox()
        self.publisher.publish(
            events_pb2.TaskDelete(
                container_id=c.id,
                id=p.exec_id or c.id,
                pid=self._pid(),
                exit_status=p.exit_status,
                exited_at=p.exited_at,
            )
        )
        return shim_pb2.DeleteResponse(pid=self._pid(), exit_status=p.exit_status, exited_at=p.exited_at)

    async def shutdown(self, req: shim_pb2.ShutdownRequest) -> empty_pb2.Empty:
        if self.containers and not req.now:
            return empty_pb2.Empty()
        await self._teardown_sandbox()
        await self.publisher.drain()
        asyncio.get_running_loop().call_soon(self.on_shutdown)
        return empty_pb2.Empty()

    def _vm_alive(self) -> bool:
        sb = self.sandbox
        return sb is not None and not sb.destroyed and sb.vm.exited is not None and not sb.vm.exited.done()

    async def _watch_vm(self) -> None:
        sb = self.sandbox
        assert sb is not None and sb.vm.exited is not None
        rc = await sb.vm.exited
        if not sb.destroyed:
            log.warning("event=vm_died rc=%d console_tail=%r", rc, sb.vm.console_tail(400))
            if sb.network is not None:
                await sb.network.close()  # the tap went with QEMU; the veth's qdisc goes now
        for c in list(self.containers.values()):
            for p in (c.init, *c.execs.values()):
                self._exited(c, p, VM_EXIT_STATUS)

    async def _teardown_sandbox(self) -> None:
        """Stop every container, DestroySandbox, stop the VM, remove its state. Idempotent."""
        sb = self.sandbox
        if sb is None or sb.destroyed:
            return
        if self._vm_alive() and sb.agent.client.connected:
            with contextlib.suppress(TtrpcError, ShimError, OSError):
                if sb.pause_created:
                    await sb.agent.signal(sb.id, "", signal.SIGKILL)
                    await sb.agent.call(
                        "RemoveContainer",
                        agent_pb2.RemoveContainerRequest(container_id=sb.id, timeout=0),
                        empty_pb2.Empty,
                    )
                await sb.agent.call("DestroySandbox", agent_pb2.DestroySandboxRequest(), empty_pb2.Empty)
        sb.destroyed = True
        await sb.agent.close()
        await sb.vm.stop()
        if sb.network is not None:
            await sb.network.close()
        if self._vm_watch is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._vm_watch, 5)
        shutil.rmtree(sb.workdir, ignore_errors=True)
        if sb.empty_dirs is not None:
            sb.empty_dirs.remove_files()
        log.info("event=sandbox_destroyed sid=%s", sb.id)
