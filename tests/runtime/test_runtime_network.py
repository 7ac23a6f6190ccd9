"""Pod networking through containerd's CRI plugin and CNI, with our shim and TCG pod VMs.

containerd runs in a network namespace of its own (``tools.vm.containerd``, ``cni=True``): Debian's
bridge + host-local plugins give each pod a netns with ``eth0`` on a bridge there; a TLS registry
(``tools.vm.registry.containerd_registry``) listens in the same namespace, trusted by the CRI plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf.message import Message

from attestation import initdata as initdata_format
from guest.protocols import agent_pb2, types_pb2
from guest.ttrpc import Client, Code, TtrpcError
from runtime.config import Config
from runtime.errors import InvalidInputError
from runtime.hvsock import connect
from runtime.network import TAP_NAME, Nic, PodNetwork, open_netns
from runtime.podvm import VmLaunch, qemu_argv
from tests.support import scratch_netns
from tools.vm.containerd import (
    IMAGE_NAME,
    RUNTIME,
    Containerd,
    busybox_image_archive,
    containerd_missing,
    guest_pull_config,
    running_containerd,
    shim_processes,
)
from tools.vm.cri.client import CriClient
from tools.vm.registry import Registry, containerd_registry, unavailable


@pytest.mark.root
def test_cri_pulls_by_digest_from_the_registry_in_containerds_namespace(tmp_path: Path) -> None:
    reason = containerd_missing(cni=True) or unavailable()
    if reason:
        pytest.skip(reason)
    config = tmp_path / "unused.toml"  # no pod runs here: the handler's configuration is never read
    config.write_text("")
    with running_containerd(cri_runtime_config=config, cni=True) as ctd:
        assert ctd.cni_subnet is not None
        archive = tmp_path / "image.tar"
        digest = busybox_image_archive(archive)
        with containerd_registry(ctd, tmp_path / "reg") as reg:
            reg.push_archive(archive, "test/busybox", "1")
            client = CriClient(ctd.socket)
            try:
                client.wait_ready()
                ref = f"{reg.hostport}/test/busybox@{digest}"
                spec = client.pb.ImageSpec(image=ref)
                pulled = client.call("PullImage", client.pb.PullImageRequest(image=spec))
            finally:
                client.close()
            assert pulled.image_ref.startswith("sha256:")
            assert ("GET", f"/v2/test/busybox/manifests/{digest}", 200) in reg.requests()
        k8s = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        listed = k8s.ctr("image", "ls", "-q").stdout.split()
        assert f"{reg.hostport}/test/busybox@{digest}" in listed


# -- the host side alone: a CNI-like netns, no VM ------------------------------------------------------

def _cni_like(netns: Path, outside: Path) -> None:
    """What the bridge plugin leaves in a pod's netns: eth0 (a veth whose peer is ``outside``) with an
    address, the subnet's kernel route, a default route via the gateway, a permanent neighbour."""
    for argv in (("link", "add", "eth0", "mtu", "1450", "type", "veth", "peer", "name", "peer0"),
                 ("link", "set", "peer0", "netns", outside.name),
                 ("addr", "add", "10.77.0.5/24", "dev", "eth0"), ("link", "set", "eth0", "up"),
                 ("route", "add", "default", "via", "10.77.0.1"),
                 ("neigh", "add", "10.77.0.9", "lladdr", "52:54:00:aa:bb:cc", "dev", "eth0", "nud",
                  "permanent")):
        _ns(netns, "ip", *argv)


def _ns(netns: Path, tool: str, *argv: str) -> str:
    """``ip``/``tc`` with ``-n`` on a named namespace; its output."""
    return subprocess.run([tool, "-n", netns.name, *argv], capture_output=True, text=True, check=True,
                          timeout=30).stdout


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"), reason="needs root and a tun")
async def test_pod_network_joins_veth_and_tap_and_leaves_nothing() -> None:
    with scratch_netns("podnet") as netns, scratch_netns("podnetbr") as outside:
        _cni_like(netns, outside)
        veth = _ns(netns, "ip", "-o", "link", "show", "eth0").split()
        mac = veth[veth.index("link/ether") + 1]
        net = await PodNetwork.connect(str(netns))
        try:
            assert net.nic is not None and net.nic.mac == mac
            iface = net.interface()
            assert (iface.name, iface.hwAddr, iface.mtu, iface.raw_flags) == ("eth0", mac, 1450, 0)
            assert [(a.address, a.mask) for a in iface.IPAddresses] == [("10.77.0.5", "24")]
            ep = net.endpoint
            assert ep is not None
            # The kernel's subnet route stays behind (the guest's kernel makes its own), as in Kata.
            assert [(r.dest, r.gateway, r.device) for r in ep.routes] == [("", "10.77.0.1", "eth0")]
            neighbours = [(n.toIPAddress.address, n.lladdr) for n in ep.neighbors]
            assert neighbours == [("10.77.0.9", "52:54:00:aa:bb:cc")]
            tap = _ns(netns, "ip", "-d", "link", "show", TAP_NAME)
            assert "mtu 1450" in tap and "tun type tap" in tap
            for dev, peer in (("eth0", TAP_NAME), (TAP_NAME, "eth0")):
                filters = _ns(netns, "tc", "filter", "show", "dev", dev, "ingress")
                assert f"Egress Redirect to device {peer}" in filters, filters
            net.release_tap()  # QEMU would hold it now; with nobody holding it the tap is gone
            assert TAP_NAME not in _ns(netns, "ip", "link")
        finally:
            await net.close()
        assert "ingress" not in _ns(netns, "tc", "qdisc", "show")
        await net.close()  # idempotent


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns)")
async def test_a_netns_with_no_veth_gives_no_nic_and_two_veths_are_refused() -> None:
    with scratch_netns("podnet0") as netns:
        net = await PodNetwork.connect(str(netns))
        assert net.nic is None and net.endpoint is None
        await net.close()
        for name in ("eth0", "eth1"):
            _ns(netns, "ip", "link", "add", name, "type", "veth", "peer", "name", f"p{name}")
        with pytest.raises(InvalidInputError, match="one veth"):
            await PodNetwork.connect(str(netns))
        assert TAP_NAME not in _ns(netns, "ip", "link")


@pytest.mark.parametrize("path", ["relative/netns", "/run/netns/../netns/x", "/run//netns/x"])
def test_netns_paths_must_be_absolute_and_normalised(path: str) -> None:
    with pytest.raises(InvalidInputError, match="absolute, normalised"):
        open_netns(path)


def test_a_fifo_or_device_given_as_netns_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading would block the shim
    for path in (str(fifo), "/dev/null"):
        with pytest.raises(InvalidInputError, match=r"a network namespace \(nsfs\) file"):
            open_netns(path)


def test_the_nic_reaches_qemu_as_an_inherited_tap_fd(tmp_path: Path) -> None:
    from image.build import ImageDescription, VerityParams

    image = ImageDescription(
        kernel="vmlinuz", initrd="initrd", disk="root.img", cmdline="console=hvc0", root_hash="ab",
        salt="cd", rootfs="erofs",
        verity=VerityParams("sha256", 4096, 4096, 1, 4096, 1, 1, False, "/dev/vda", "/dev/vda"),
        initdata=None, build_seconds=0.0, inputs_digest="00")
    for tee, device in (("simulated", "virtio-net-device"), ("snp", "virtio-net-pci")):
        cfg = Config(path=tmp_path / "rt.toml", image_dir=Path("/img"), tee=tee,
                     firmware=None if tee == "simulated" else Path("/fw/OVMF.fd"))
        launch = VmLaunch(config=cfg, image=image, initdata_digest=bytes(32),
                          initdata_image=tmp_path / "i.img", workdir=tmp_path,
                          accel="tcg" if tee == "simulated" else "kvm",
                          nic=Nic(7, "52:54:00:aa:bb:cc"))
        argv = qemu_argv(launch)
        netdev = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-netdev"]
        assert netdev == ["tap,id=pod0,fd=7,vhost=off"]
        assert f"{device},netdev=pod0,mac=52:54:00:aa:bb:cc" in argv
    for mac in ("52:54:00:aa:bb:cc,romfile=/x", "52:54:00:AA:BB:CC", ""):
        with pytest.raises(InvalidInputError):
            Nic(7, mac)


# -- two CNI pods in two TCG pod VMs, guest-pulled images -------------------------------------------

IMAGE_REPO, TAMPERED_REPO = "test/busybox", "test/tampered"
PAGE = "hello from pod A\n"


@dataclass
class Pod:
    sid: str
    ip: str
    netns: str  # the sandbox's network namespace path (from its bundle)
    ns_fd: int  # held open: the namespace outlives containerd's unmount, so the test can look inside
    agent_socket: Path
    containers: list[str] = field(default_factory=list)

    @property
    def ns_path(self) -> Path:
        return Path(f"/proc/{os.getpid()}/fd/{self.ns_fd}")


@dataclass
class Env:
    ctd: Containerd
    client: CriClient
    reg: Registry
    initdata: str  # the annotation value
    image: str  # reference by digest, guest-pulled
    tampered: str
    tampered_layer: str
    work: Path
    pods: dict[str, Pod] = field(default_factory=dict)
    start_seconds: float = 0.0

    @property
    def rundir(self) -> Path:
        return Path(self.ctd.env["CONTRAST_CC_RUN_DIR"])


def _layer_digest(archive: Path, manifest_digest: str) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"blobs/sha256/{manifest_digest.removeprefix('sha256:')}")
        assert member is not None
        layers = json.loads(member.read())["layers"]
    return str(layers[0]["digest"])


def _policy_allow_all() -> str:
    from tools.vm.pod import RPC_NAMES

    return "\n".join(["package agent_policy", "", *(f"default {n} := true" for n in RPC_NAMES), ""])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    reason = containerd_missing(cni=True) or unavailable() or qemu_available()
    if reason:
        pytest.skip(reason)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun for the pods' taps")
    work = tmp_path_factory.mktemp("net")
    config = guest_pull_config(pod_image_dir(request.config), work)
    with running_containerd(cri_runtime_config=config, cni=True) as ctd:
        k8s = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        sandbox_archive = work / "sandbox.tar"
        busybox_image_archive(sandbox_archive)
        # The sandbox image is only for containerd (guest pull runs the guest's own pause). The
        # workload image differs from it: containerd names an image by its first reference, and an
        # image it also knows by tag would reach the shim as that tag, which guest pull refuses.
        archive, tampered_archive = work / "busybox.tar", work / "tampered.tar"
        digest = busybox_image_archive(archive, {"etc/workload": b"guest-pulled\n"})
        tampered = busybox_image_archive(tampered_archive, {"etc/tampered": os.urandom(2048)})
        imported = k8s.ctr("image", "import", str(sandbox_archive))
        assert imported.returncode == 0, imported.stderr
        with containerd_registry(ctd, work / "reg") as reg:
            reg.push_archive(archive, IMAGE_REPO, "1")
            reg.push_archive(tampered_archive, TAMPERED_REPO, "1")
            pem = reg.ca_pem.replace("\n", "\\n")
            puller = f'[registries."{reg.hostport}"]\nca = "{pem}"\n'
            toml = initdata_format.encode(initdata_format.Initdata(
                "0.1.0", "sha256", {"policy.rego": _policy_allow_all(), "imagepuller.toml": puller}))
            client = CriClient(ctd.socket)
            try:
                client.wait_ready()
                image = f"{reg.hostport}/{IMAGE_REPO}@{digest}"
                bad = f"{reg.hostport}/{TAMPERED_REPO}@{tampered}"
                for ref in (image, bad):  # kubelet's PullImage: containerd needs the image too
                    client.call("PullImage", client.pb.PullImageRequest(image=client.pb.ImageSpec(image=ref)))
                layer = _layer_digest(tampered_archive, tampered)
                blob = reg.blob_file(layer)
                data = bytearray(blob.read_bytes())
                data[len(data) // 2] ^= 0x01  # after containerd's pull: only the guest sees it
                blob.write_bytes(bytes(data))
                e = Env(ctd, client, reg, initdata_format.encode_annotation(toml), image, bad, layer, work)
                try:
                    yield e
                finally:
                    for pod in e.pods.values():
                        with contextlib.suppress(Exception):
                            client.call("StopPodSandbox",
                                        client.pb.StopPodSandboxRequest(pod_sandbox_id=pod.sid))
                            client.call("RemovePodSandbox",
                                        client.pb.RemovePodSandboxRequest(pod_sandbox_id=pod.sid))
                        with contextlib.suppress(OSError):
                            os.close(pod.ns_fd)
            finally:
                client.close()


def _sandbox_config(env: Env, name: str) -> Any:
    pb = env.client.pb
    logs = env.work / f"logs-{name}"
    logs.mkdir(exist_ok=True)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default", attempt=0),
        hostname=name,
        log_directory=str(logs),
        annotations={initdata_format.ANNOTATION: env.initdata},
    )


def _start_container(env: Env, sid: str, sandbox_config: Any, name: str, image: str,
                     command: list[str]) -> str:
    pb = env.client.pb
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                             command=command, log_path=f"{name}.log")
    cid = str(env.client.call("CreateContainer", pb.CreateContainerRequest(
        pod_sandbox_id=sid, config=cfg, sandbox_config=sandbox_config)).container_id)
    env.client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
    return cid


def _run_pod(env: Env, name: str, command: list[str]) -> Pod:
    pb = env.client.pb
    before = set(env.rundir.glob("*/vm/agent.sock")) if env.rundir.exists() else set()
    config = _sandbox_config(env, name)
    t0 = time.monotonic()
    sid = str(env.client.call("RunPodSandbox", pb.RunPodSandboxRequest(
        config=config, runtime_handler="contrast-cc")).pod_sandbox_id)
    bundle = env.ctd.base / "state/io.containerd.runtime.v2.task/k8s.io" / sid / "config.json"
    namespaces = json.loads(bundle.read_text())["linux"]["namespaces"]
    netns = next(n["path"] for n in namespaces if n["type"] == "network")
    status = env.client.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
    (sock,) = set(env.rundir.glob("*/vm/agent.sock")) - before
    pod = Pod(sid, status.network.ip, netns, os.open(netns, os.O_RDONLY | os.O_CLOEXEC), sock)
    env.pods[name] = pod
    pod.containers.append(_start_container(env, sid, config, "main", env.image, command))
    if name == "a":
        env.start_seconds = time.monotonic() - t0
    return pod


def _exec(env: Env, cid: str, *cmd: str, timeout: int = 60) -> Any:
    return env.client.call("ExecSync", env.client.pb.ExecSyncRequest(container_id=cid, cmd=list(cmd),
                                                                       timeout=timeout), timeout=timeout + 30)


def _in_pod_netns(pod: Pod, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net={pod.ns_path}", "--", *argv], capture_output=True, text=True,
                          timeout=30, check=True).stdout


@pytest.fixture(scope="module")
def pods(env: Env) -> dict[str, Pod]:
    serve = f"mkdir -p /tmp/www && echo '{PAGE.strip()}' > /tmp/www/index.html && " \
            "exec busybox httpd -f -p 8080 -h /tmp/www"
    _run_pod(env, "a", ["sh", "-c", serve])
    _run_pod(env, "b", ["sleep", "3600"])
    return env.pods


def _fetch(env: Env, client: Pod, server: Pod) -> tuple[int, str]:
    """(exit code, body) of an HTTP GET from ``client``'s container to ``server``'s httpd. busybox's
    nc, not its wget: the static glibc build's wget crashes without NSS files in the image."""
    request = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 {server.ip} 8080"
    deadline = time.monotonic() + 60
    while True:  # httpd may still be starting
        got = _exec(env, client.containers[0], "sh", "-c", request)
        head, _, body = got.stdout.decode().partition("\r\n\r\n")
        if (got.exit_code == 0 and " 200 " in head) or time.monotonic() > deadline:
            return got.exit_code, body
        time.sleep(1)


@pytest.mark.root
@pytest.mark.vm
def test_two_cni_pods_reach_each_other(env: Env, pods: dict[str, Pod]) -> None:
    a, b = pods["a"], pods["b"]
    subnet = ipaddress.ip_network(env.ctd.cni_subnet or "")
    assert ipaddress.ip_address(a.ip) in subnet and ipaddress.ip_address(b.ip) in subnet and a.ip != b.ip
    assert _fetch(env, b, a) == (0, PAGE)
    # The container runs from the guest-pulled workload image (a file only that image has).
    assert _exec(env, b.containers[0], "cat", "/etc/workload").stdout == b"guest-pulled\n"
    # The guest's eth0 has the address CNI gave the pod's veth, and the default route via the bridge.
    addr = _exec(env, a.containers[0], "busybox", "ip", "-4", "addr", "show", "eth0")
    assert f"inet {a.ip}/24" in addr.stdout.decode(), addr
    route = _exec(env, b.containers[0], "busybox", "ip", "route").stdout.decode()
    assert f"default via {subnet.network_address + 1} dev eth0" in route, route
    # Host side, inside the pod's netns: the tap and Kata's tc redirects both ways.
    links = _in_pod_netns(a, "ip", "-o", "link")
    assert "tap0_cc" in links and "eth0" in links
    for dev, peer in (("eth0", "tap0_cc"), ("tap0_cc", "eth0")):
        assert "ingress" in _in_pod_netns(a, "tc", "qdisc", "show", "dev", dev)
        filters = _in_pod_netns(a, "tc", "filter", "show", "dev", dev, "ingress")
        assert f"Egress Redirect to device {peer}" in filters, filters
    # The workload's rootfs came from the guest's own pull: each VM fetched the layer itself.
    layer = _layer_digest(env.work / "busybox.tar", env.image.split("@")[1])
    gets = [r for r in env.reg.requests()
            if r[0] == "GET" and r[1].endswith(f"/blobs/{layer}") and r[2] == 200]
    assert len(gets) >= 3, gets  # containerd's PullImage, then pod A's and pod B's guest
    print(f"CNI pod start (RunPodSandbox -> container started, guest pull): {env.start_seconds:.1f}s")


async def _agent_errors(sock: Path, calls: list[tuple[str, Message]]) -> list[TtrpcError | None]:
    """Each request straight to the pod's agent over its hybrid-vsock socket (the host's position)."""
    client = Client()
    await client.connect_socket(connect(sock, 1024, timeout=30))
    out: list[TtrpcError | None] = []
    try:
        for method, req in calls:
            try:
                await client.call("grpc.AgentService", method, req.SerializeToString(), timeout=30)
                out.append(None)
            except TtrpcError as e:
                out.append(e)
    finally:
        await client.close()
    return out


@pytest.mark.root
@pytest.mark.vm
def test_hostile_network_requests_to_the_agent_change_nothing(env: Env, pods: dict[str, Pod]) -> None:
    a, b = pods["a"], pods["b"]
    link = _in_pod_netns(b, "ip", "-o", "link", "show", "eth0").split()
    mac = link[link.index("link/ether") + 1]  # the veth's, which the guest's NIC has too
    V4 = types_pb2.IPFamily.v4

    def iface(**kw: Any) -> agent_pb2.UpdateInterfaceRequest:
        fields: dict[str, Any] = {"device": "eth0", "name": "eth0", "hwAddr": mac, "mtu": 1500,
                                  "IPAddresses": [types_pb2.IPAddress(family=V4, address=b.ip, mask="24")]}
        fields.update(kw)
        return agent_pb2.UpdateInterfaceRequest(interface=types_pb2.Interface(**fields))

    def routes(**kw: Any) -> agent_pb2.UpdateRoutesRequest:
        fields: dict[str, Any] = {"dest": "", "gateway": "10.0.0.1", "device": "eth0", "family": V4}
        fields.update(kw)
        return agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=[types_pb2.Route(**fields)]))

    hostile: list[tuple[str, Message, str]] = [
        ("UpdateInterface", iface(hwAddr="00:00:00:00:00:00", name="eth9"), "interface.hwAddr"),  # lo's MAC
        ("UpdateInterface", iface(name="lo"), "interface.name"),
        ("UpdateInterface", iface(name="eth0 up; reboot"), "interface.name"),
        ("UpdateInterface",
         iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="127.0.0.9", mask="8")]), "address"),
        ("UpdateInterface", iface(IPAddresses=[types_pb2.IPAddress(family=V4, address=b.ip, mask="\u00b3")]),
         "mask"),
        ("UpdateRoutes", routes(device="lo", gateway=""), "Routes[0].device"),
        ("UpdateRoutes", routes(gateway="fe80::1"), "Routes[0].gateway"),
        ("UpdateRoutes", routes(dest="0.0.0.0/0", flags=0x10), "Routes[0].flags"),
    ]
    state = ("busybox", "sh", "-c", "busybox ip addr; busybox ip route; busybox ip link")
    before = _exec(env, b.containers[0], *state).stdout
    errors = asyncio.run(_agent_errors(b.agent_socket, [(m, r) for m, r, _ in hostile]))
    for (method, _, field_name), err in zip(hostile, errors, strict=True):
        assert err is not None and err.code == Code.INVALID_ARGUMENT, (method, field_name, err)
        assert field_name in err.status.message, (field_name, err.status.message)
    assert _exec(env, b.containers[0], *state).stdout == before
    assert _fetch(env, b, a) == (0, PAGE)


@pytest.mark.root
@pytest.mark.vm
def test_a_tampered_registry_blob_fails_create_container(env: Env, pods: dict[str, Pod]) -> None:
    b = pods["b"]
    pb = env.client.pb
    config = _sandbox_config(env, "b")
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="tampered"),
                             image=pb.ImageSpec(image=env.tampered),
                             command=["sh", "-c", "echo RAN > /dev/termination-log; echo RAN"],
                             log_path="tampered.log")
    # CRI's CreateContainer only records the container; StartContainer creates the task, i.e. the
    # shim's Create and the agent's CreateContainer with the guest's pull.
    cid = env.client.call("CreateContainer", pb.CreateContainerRequest(pod_sandbox_id=b.sid, config=cfg,
                                                                       sandbox_config=config)).container_id
    with pytest.raises(grpc.RpcError) as info:
        env.client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
    assert env.tampered_layer.removeprefix("sha256:") in str(info.value.details()), info.value.details()
    status = env.client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
    assert status.state != pb.CONTAINER_RUNNING, status
    log = env.work / "logs-b" / "tampered.log"
    assert not log.exists() or "RAN" not in log.read_text()
    ps = _exec(env, b.containers[0], "busybox", "ps", "-o", "args").stdout.decode()
    assert "RAN" not in ps and "tampered" not in ps, ps


@pytest.mark.root
@pytest.mark.vm
def test_a_netns_path_that_is_no_netns_is_refused_by_the_shim(env: Env, tmp_path: Path) -> None:
    ctd = env.ctd
    assert ctd.ctr("image", "import", str(env.work / "sandbox.tar")).returncode == 0
    regular = tmp_path / "not-a-netns"
    regular.write_bytes(b"keep me\n")
    with scratch_netns("shimref") as other:
        link = tmp_path / "netns-link"
        link.symlink_to(other)  # a symlink to a real netns elsewhere: refused, not followed
        own = tmp_path / "containerds-own-netns"
        own.touch()
        subprocess.run(["mount", "--bind", str(ctd.netns), str(own)], check=True, timeout=30)
        try:
            cases = {
                "regular file": (regular, "a network namespace (nsfs) file"),
                "symlink": (link, "not a symlink"),
                "directory": (tmp_path, "a network namespace (nsfs) file"),
                "the shim's own namespace": (own, "the pod's own namespace"),
                "missing": (tmp_path / "gone", "an existing network namespace"),
            }
            for i, (case, (path, expected)) in enumerate(cases.items()):
                ran = ctd.ctr("run", "--rm", "--runtime", RUNTIME, "--runtime-config-path",
                              str(env.work / "rt-guest-pull.toml"),
                              "--annotation", f"{initdata_format.ANNOTATION}={env.initdata}",
                              "--with-ns", f"network:{path}", IMAGE_NAME, f"netns-{i}", "true")
                assert ran.returncode != 0, case
                assert "invalid sandbox network namespace path" in ran.stderr and expected in ran.stderr, \
                    (case, ran.stderr)
        finally:
            subprocess.run(["umount", str(own)], check=False, timeout=30)
    assert regular.read_bytes() == b"keep me\n"
    assert ctd.ctr("containers", "ls", "-q").stdout.split() == []
    # No pod VM was started and no state written for any of them: only pods a and b have some.
    assert len(list(env.rundir.glob("*/vm/qemu.pid"))) == len(list(env.rundir.glob("*/vm"))) == len(env.pods)


@pytest.mark.root
@pytest.mark.vm
def test_a_killed_pod_vm_takes_its_tap_and_filters_along(env: Env, pods: dict[str, Pod]) -> None:
    a = pods["a"]
    qemu_pid = int((a.agent_socket.parent / "qemu.pid").read_text())
    os.kill(qemu_pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "tap0_cc" not in _in_pod_netns(a, "ip", "-o", "link") and \
                "ingress" not in _in_pod_netns(a, "tc", "qdisc", "show", "dev", "eth0"):
            break
        time.sleep(0.5)
    assert "tap0_cc" not in _in_pod_netns(a, "ip", "-o", "link")
    assert "ingress" not in _in_pod_netns(a, "tc", "qdisc", "show", "dev", "eth0")
    assert _in_pod_netns(a, "tc", "filter", "show", "dev", "eth0", "ingress").strip() == ""
    # containerd sees the sandbox's task exit (kubelet would restart the pod).
    pb = env.client.pb
    deadline = time.monotonic() + 60
    while True:
        status = env.client.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=a.sid)).status
        if status.state == 1 or time.monotonic() > deadline:  # SANDBOX_NOTREADY
            break
        time.sleep(0.5)
    assert status.state == 1, status


@pytest.mark.root
@pytest.mark.vm
def test_stop_and_remove_leave_no_tap_qdisc_process_or_file(env: Env, pods: dict[str, Pod]) -> None:
    pb = env.client.pb
    for name in list(env.pods):
        pod = env.pods.pop(name)
        try:
            env.client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.sid))
            env.client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod.sid))
            # containerd removed the veth and unmounted the netns; our fd keeps it alive to look in.
            links = _in_pod_netns(pod, "ip", "-o", "link")
            assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links
            assert "ingress" not in _in_pod_netns(pod, "tc", "qdisc", "show")
        finally:
            os.close(pod.ns_fd)
    deadline = time.monotonic() + 30
    while shim_processes(env.rundir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shim_processes(env.rundir) == []
    assert not env.rundir.exists() or list(env.rundir.rglob("*")) == []
