"""A pod VM driven like Kata's runtime (tests/backend, tools/bench/pod): the policy (initdata), a
busybox erofs+verity layer, Kata-shaped requests, and a
synchronous ttrpc client over hybrid vsock (an event loop on a thread, so tests stay plain functions).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

from guest.protocols import agent_pb2
from guest.ttrpc import Client
from tools.vm.hvsock import BridgeThread, connect
from tools.vm.qemu import Disk, SerialPort, VirtualMachine

M = TypeVar("M", bound=Message)
AGENT = "grpc.AgentService"
SANDBOX_ID = "a" * 64
AGENT_PROTO = Path(__file__).resolve().parents[2] / "guest/protocols/agent.proto"
RPC_NAMES = sorted(set(re.findall(r"rpc\s+\w+\s*\(\s*([\w.]+)\s*\)", AGENT_PROTO.read_text())))


SHARED = "/run/kata-containers/shared/containers"
CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE"]


def build_busybox_layer(work: Path) -> tuple[Path, dict[str, str]]:
    """An erofs image of Debian's busybox-static (every applet linked) with a verity tree appended
    (no superblock); returns the disk and its kata ``X-kata.dmverity.*`` values."""
    from image.build.erofs import make_erofs

    stage = work / "busybox-rootfs"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "bin").mkdir(parents=True)
    for d in ("proc", "sys", "dev", "tmp", "etc", "root", "run"):
        (stage / d).mkdir()
    shutil.copyfile("/bin/busybox", stage / "bin/busybox")
    (stage / "bin/busybox").chmod(0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout
    for name in applets.split():
        if name != "busybox":
            (stage / "bin" / name).symlink_to("busybox")
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    disk = work / "busybox.img"
    make_erofs(stage, disk, epoch=0, compression="")
    size = disk.stat().st_size
    if size % 4096:
        with open(disk, "ab") as f:
            f.write(b"\0" * (-size % 4096))
        size = disk.stat().st_size
    salt = hashlib.sha256(b"busybox-layer").hexdigest()
    out = subprocess.run(["veritysetup", "format", "--no-superblock", f"--salt={salt}",
                          f"--hash-offset={size}", f"--data-blocks={size // 4096}", str(disk), str(disk)],
                         capture_output=True, text=True, check=True).stdout
    root = re.search(r"Root hash:\s+([0-9a-f]{64})", out)
    assert root is not None, out
    return disk, {"roothash": root.group(1), "salt": salt, "hashoffset": str(size), "no-superblock": "true"}


def corrupt_copy(layer: Path, out: Path) -> int:
    """``layer`` with one bit flipped in busybox's first block (its ELF header: every exec reads
    it), the verity tree unchanged; returns the offset."""
    import shutil as _shutil

    data = layer.read_bytes()
    marker = Path("/bin/busybox").read_bytes()[:64]  # the only ELF file in the layer
    offset = data.find(marker)
    assert offset > 0, "busybox data not found in the layer image"
    _shutil.copyfile(layer, out)
    with open(out, "r+b") as f:
        f.seek(offset + 16)
        byte = f.read(1)
        f.seek(offset + 16)
        f.write(bytes([byte[0] ^ 0x01]))
    return offset + 16


def layer_options(pin: dict[str, str]) -> list[str]:
    return ["X-kata.dmverity-enabled=true", *(f"X-kata.dmverity.{k}={v}" for k, v in sorted(pin.items()))]


def pod_policy(pin: dict[str, str]) -> str:
    """Every request allowed except a CreateContainer whose program is /bin/forbidden; the busybox
    layer's verity parameters pinned in policy_data (what guest/storage checks before mapping)."""
    lines = ["package agent_policy", "", "import future.keywords.if", ""]
    lines += [f"default {n} := true" for n in RPC_NAMES if n != "CreateContainerRequest"]
    lines += ["default CreateContainerRequest := false",
              "CreateContainerRequest if { input.OCI.Process.Args[0] != \"/bin/forbidden\" }",
              "", f"policy_data := {json.dumps({'containers': [{'erofs_layers': [pin]}]})}", ""]
    return "\n".join(lines)


def initdata_disk(work: Path, policy: str) -> tuple[Path, str]:
    """The initdata block device carrying ``policy`` and the HOST_DATA value that binds it."""
    from types import MappingProxyType

    from attestation import initdata

    raw = initdata.encode(initdata.Initdata(version="0.1.0", algorithm="sha256",
                                            data=MappingProxyType({"policy.rego": policy})))
    disk = work / "initdata.img"
    disk.write_bytes(initdata.encode_device(raw))
    return disk, initdata.platform_digest(initdata.digest(raw), 32).hex()


@dataclass
class Agent:
    """Blocking calls on one long-lived ttrpc connection (the runtime's LongLiveConn)."""

    loop: asyncio.AbstractEventLoop
    client: Client
    ready_seconds: float = 0.0  # host clock, QEMU start → the agent's "event=serving"

    def submit(self, method: str, request: Message, reply: type[M], timeout: float = 120) -> Future[M]:
        async def go() -> M:
            # timeout 0: no deadline (WaitProcess, GetOOMEvent, like the runtime)
            payload = await self.client.call(AGENT, method, request.SerializeToString(),
                                             timeout=timeout or None)
            return reply.FromString(payload)

        return asyncio.run_coroutine_threadsafe(go(), self.loop)

    def call(self, method: str, request: Message, reply: type[M], timeout: float = 120) -> M:
        return self.submit(method, request, reply, timeout).result(timeout + 30)

    def raw(self, service: str, method: str, payload: bytes, timeout: float = 60) -> bytes:
        async def go() -> bytes:
            return await self.client.call(service, method, payload, timeout=timeout)

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout + 30)



POD_MAC = "52:54:00:c0:ff:ee"
# A virtio NIC on a QEMU hub port with nothing else on the hub: an interface for UpdateInterface /
# UpdateRoutes to configure, and no path for a packet to leave the VM.
NIC_ARGS = ["-netdev", "hubport,id=pod0,hubid=0", "-device", f"virtio-net-device,netdev=pod0,mac={POD_MAC}"]


async def _close(client: Client) -> None:
    await client.close()
    await asyncio.sleep(0.05)  # connection_lost closes the socket


@contextlib.contextmanager
def running_pod(image: Path, work: Path, policy: str, layer: Path, hostdata: str,
                initdata: Path, extra_disks: tuple[Path, ...] = ()) -> Iterator[tuple[VirtualMachine, Agent]]:
    """initdata is /dev/vdb, the layer /dev/vdc, ``extra_disks`` /dev/vdd onwards."""
    vm = VirtualMachine(image, extra_cmdline=f"cg.test.hostdata={hostdata}", memory_mib=1024,
                        disks=[Disk(initdata), Disk(layer), *(Disk(d) for d in extra_disks)],
                        ports=[SerialPort("cg.hvsock")],
                        extra_args=NIC_ARGS, workdir=work / "vm")
    assert vm.workdir is not None
    vm.workdir.mkdir(exist_ok=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pod-client", daemon=True)
    thread.start()
    client = Client()
    try:
        vm.start()
        vm.wait_for(r"event=serving listen=vsock", 600)
        ready = time.monotonic() - vm.started_at
        hv = vm.workdir / "hvsock.sock"
        with BridgeThread(vm.port_path("cg.hvsock"), hv):
            sock = connect(hv, 1024, timeout=60)
            asyncio.run_coroutine_threadsafe(client.connect_socket(sock), loop).result(60)
            yield vm, Agent(loop, client, ready)
            asyncio.run_coroutine_threadsafe(_close(client), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        keep = os.environ.get("CG_POD_CONSOLE")  # where to keep the console for diagnosis
        if keep:
            Path(keep).write_text(vm.text())
        vm.close()


def container_request(cid: str, args: list[str], pin: dict[str, str], *, hosts: str, memory: int = 0,
                      tty: bool = False, root: str | None = None,
                      source: str = "/dev/vdc") -> agent_pb2.CreateContainerRequest:
    req = agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid)
    req.storages.add(driver="erofs.multi-layer", source=source, fstype="erofs",
                     options=layer_options(pin),
                     mount_point=f"/run/kata-containers/{cid}/rootfs")
    oci = req.OCI
    oci.Version = "1.1.0"
    oci.Process.Args.extend(args)
    oci.Process.Env.extend(["PATH=/bin", "HOSTNAME=pod"])
    oci.Process.Cwd = "/"
    oci.Process.Terminal = tty
    for field in ("Bounding", "Effective", "Permitted"):
        getattr(oci.Process.Capabilities, field).extend(CAPS)
    oci.Process.ApparmorProfile = "cri-containerd.apparmor.d"
    oci.Root.Path = root or f"/run/kata-containers/{cid}/rootfs"
    oci.Mounts.add(destination="/proc", type="proc", source="proc", options=["nosuid", "noexec", "nodev"])
    oci.Mounts.add(destination="/dev", type="tmpfs", source="tmpfs",
                   options=["nosuid", "strictatime", "mode=755", "size=65536k"])
    oci.Mounts.add(destination="/dev/pts", type="devpts", source="devpts",
                   options=["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"])
    oci.Mounts.add(destination="/dev/mqueue", type="mqueue", source="mqueue",
                   options=["nosuid", "noexec", "nodev"])
    oci.Mounts.add(destination="/sys", type="sysfs", source="sysfs",
                   options=["nosuid", "noexec", "nodev", "ro"])
    oci.Mounts.add(destination="/sys/fs/cgroup", type="cgroup", source="cgroup",
                   options=["nosuid", "noexec", "nodev", "relatime", "ro"])
    oci.Mounts.add(destination="/etc/hosts", type="bind", source=hosts, options=["rbind", "rprivate", "ro"])
    oci.Mounts.add(destination="/dev/shm", type="bind", source="/run/kata-containers/sandbox/shm",
                   options=["rbind"])
    for t in ("ipc", "uts", "mount"):
        oci.Linux.Namespaces.add(Type=t)
    oci.Linux.CgroupsPath = f"kubepods-besteffort-pod1.slice:cri-containerd:{cid}"
    if memory:
        oci.Linux.Resources.Memory.Limit = memory
        oci.Linux.Resources.Memory.Swap = memory
    oci.Linux.MaskedPaths.extend(["/proc/kcore", "/proc/keys"])
    oci.Linux.ReadonlyPaths.extend(["/proc/sys", "/proc/sysrq-trigger"])
    oci.Annotations["io.kubernetes.cri.container-type"] = "container"
    oci.Annotations["io.kubernetes.cri.sandbox-id"] = SANDBOX_ID
    oci.Annotations["io.katacontainers.pkg.oci.container_type"] = "pod_container"
    return req


def pause_request(resolv: str) -> agent_pb2.CreateContainerRequest:
    meta = {"metadata": {"io.kubernetes.cri.container-type": "sandbox",
                         "io.kubernetes.cri.sandbox-id": SANDBOX_ID}}
    req = agent_pb2.CreateContainerRequest(container_id=SANDBOX_ID, exec_id=SANDBOX_ID, sandbox_pidns=True)
    req.storages.add(driver="image_guest_pull", source="pause", fstype="overlay",
                     mount_point=f"/run/kata-containers/{SANDBOX_ID}/rootfs",
                     driver_options=[f"image_guest_pull={json.dumps(meta)}"])
    oci = req.OCI
    oci.Version = "1.1.0"
    oci.Process.Args.append("/pause")
    oci.Root.Path = f"/run/kata-containers/{SANDBOX_ID}/rootfs"
    oci.Root.Readonly = True
    oci.Hostname = "busybox-pod"
    oci.Mounts.add(destination="/proc", type="proc", source="proc", options=["nosuid", "noexec", "nodev"])
    oci.Mounts.add(destination="/dev", type="tmpfs", source="tmpfs", options=["nosuid", "mode=755"])
    oci.Mounts.add(destination="/etc/resolv.conf", type="bind", source=resolv, options=["rbind", "ro"])
    for t in ("ipc", "uts", "mount"):
        oci.Linux.Namespaces.add(Type=t)
    oci.Annotations["io.kubernetes.cri.container-type"] = "sandbox"
    return req
