"""In the TCG pod VM: the guest pulls a busybox image by digest from Debian's docker-registry in a
network namespace this test creates, over a tap device moved into that namespace (no other route),
driven like Kata's runtime over hybrid vsock. The measured initdata carries the policy (the
guest-pull rule of oci/guest_pull.rego pinning the digest) and imagepuller.toml (the registry's CA).
The container prints from the pulled rootfs; a second container of the image fetches no layer; a
tampered blob fails CreateContainer and runs nothing; a digest the policy does not pin is refused
before any request reaches the registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from tarbuild import Entry, compress, tar_bytes
from test_guest_pull_e2e import blob_gets, build_image, busybox_layers

from guest.protocols import agent_pb2, types_pb2
from guest.ttrpc import Client, Code, TtrpcError
from oci import Digest
from oci import mediatypes as mt
from oci.policy import rule_body
from tools.vm.hvsock import BridgeThread, connect
from tools.vm.pod import RPC_NAMES, SANDBOX_ID, Agent, container_request, pause_request
from tools.vm.qemu import Disk, SerialPort, VirtualMachine
from tools.vm.registry import Registry, start_registry, unavailable

pytestmark = [pytest.mark.vm, pytest.mark.root,
              pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
              pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun for the tap")]

MAC = "52:54:00:0c:10:01"
IMAGE_KEY = "io.kubernetes.cri.image-name"


def _policy(pinned: list[str]) -> str:
    lines = ["package agent_policy", "", "import future.keywords.every", "import future.keywords.if",
             "import future.keywords.in", ""]
    lines += [f"default {n} := true" for n in RPC_NAMES if n != "CreateContainerRequest"]
    lines += ["default CreateContainerRequest := false", "",
              "CreateContainerRequest if {", "\tsome p_container in policy_data.containers",
              "\tallow_guest_pull_image(p_container, input.OCI, input.storages)", "}", ""]
    containers = [{"OCI": {"Annotations": {"io.kubernetes.cri.container-type": "sandbox"}}}]
    containers += [{"OCI": {"Annotations": {"io.kubernetes.cri.container-type": "container", IMAGE_KEY: ref}}}
                   for ref in pinned]
    return "\n".join(lines) + rule_body() + f"\npolicy_data := {json.dumps({'containers': containers})}\n"


def _initdata(work: Path, policy: str, puller: str) -> tuple[Path, str]:
    from attestation import initdata

    raw = initdata.encode(initdata.Initdata(version="0.1.0", algorithm="sha256", data=MappingProxyType(
        {"policy.rego": policy, "imagepuller.toml": puller})))
    disk = work / "initdata.img"
    disk.write_bytes(initdata.encode_device(raw))
    return disk, initdata.platform_digest(initdata.digest(raw), 32).hex()


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def _pod(image: Path, work: Path, reg: Registry, initdata: Path, hostdata: str,
         tap: str) -> Iterator[tuple[VirtualMachine, Agent]]:
    subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)
    _sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
    vm = VirtualMachine(image, extra_cmdline=f"cg.test.hostdata={hostdata}", memory_mib=1024,
                        disks=[Disk(initdata)], ports=[SerialPort("cg.hvsock")], workdir=work / "vm",
                        extra_args=["-netdev", f"tap,id=pod0,ifname={tap},script=no,downscript=no",
                                    "-device", f"virtio-net-device,netdev=pod0,mac={MAC}"])
    assert vm.workdir is not None
    vm.workdir.mkdir(exist_ok=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="vm-client", daemon=True)
    thread.start()
    client = Client()
    try:
        vm.start()
        vm.wait_for(r"event=serving listen=vsock", 600)
        # QEMU opened the tap before the guest ran; moved into the registry's namespace (the fd
        # stays attached) it is the VM's only link. Moved earlier, QEMU would create a new one.
        _sh("ip", "link", "set", tap, "netns", reg.ns)
        _sh("ip", "netns", "exec", reg.ns, "ip", "addr", "add", "10.211.0.1/30", "dev", tap)
        _sh("ip", "netns", "exec", reg.ns, "ip", "link", "set", tap, "up")
        hv = vm.workdir / "hvsock.sock"
        with BridgeThread(vm.port_path("cg.hvsock"), hv):
            sock = connect(hv, 1024, timeout=60)
            asyncio.run_coroutine_threadsafe(client.connect_socket(sock), loop).result(60)
            yield vm, Agent(loop, client)
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        if os.environ.get("CG_POD_CONSOLE"):
            Path(os.environ["CG_POD_CONSOLE"]).write_text(vm.text())
        vm.close()
        subprocess.run(["ip", "netns", "exec", reg.ns, "ip", "link", "del", tap], capture_output=True,
                       check=False)
        subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)


def _pull_request(cid: str, image: str, args: list[str], agent: Agent) -> agent_pb2.CreateContainerRequest:
    path = f"/run/kata-containers/shared/containers/{cid}-0123456789abcdef-hosts"
    agent.call("CopyFile", agent_pb2.CopyFileRequest(path=path, file_size=10, file_mode=0o100644,
                                                     dir_mode=0x800001E8, data=b"127.0.0.1\n"), _empty())
    req = container_request(cid, args, {}, hosts=path)
    del req.storages[:]
    meta = {"io.kubernetes.cri.container-type": "container", IMAGE_KEY: image,
            "io.kubernetes.cri.sandbox-id": SANDBOX_ID}
    req.storages.add(driver="image_guest_pull", source=image, fstype="overlay",
                     mount_point=f"/run/kata-containers/{cid}/rootfs",
                     driver_options=[f"image_guest_pull={json.dumps({'metadata': meta})}"])
    req.OCI.Annotations[IMAGE_KEY] = image
    return req


def _empty() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty


def _read_all(agent: Agent, cid: str) -> bytes:
    out = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = agent.call("ReadStdout", agent_pb2.ReadStreamRequest(container_id=cid, exec_id=cid, len=32768),
                       agent_pb2.ReadStreamResponse)
        if not r.data:
            return out
        out += r.data
    raise AssertionError(f"no EOF from {cid}: {out!r}")


def _run(agent: Agent, cid: str, image: str) -> bytes:
    agent.call("CreateContainer", _pull_request(cid, image, ["/bin/busybox", "cat", "/etc/motd"], agent),
               _empty(), timeout=600)
    agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=cid), _empty())
    out = _read_all(agent, cid)
    status = agent.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid),
                        agent_pb2.WaitProcessResponse)
    assert status.status == 0
    return out


def test_guest_pulls_by_digest_over_a_tap(pod_image: Path, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg", "v", subnet=206)
    try:
        dirs = tar_bytes([Entry(d, tarfile.DIRTYPE, mode=0o755) for d in ("proc", "sys", "dev", "tmp")])
        layers = [*busybox_layers(), (compress(dirs, "gzip"), mt.OCI_LAYER_GZIP, Digest.of(dirs))]
        digest = build_image(tmp_path / "good", "good", layers)
        reg.push(tmp_path / "good", "test/vm", "good", index=True)
        unique = tar_bytes([Entry("unique", data=os.urandom(4096))])
        bad_layers = [*layers, (compress(unique, "zstd"), mt.OCI_LAYER_ZSTD, Digest.of(unique))]
        bad = build_image(tmp_path / "bad", "bad", bad_layers)
        reg.push(tmp_path / "bad", "test/vmbad", "bad", index=True)
        blob = reg.blob_file(str(Digest.of(bad_layers[-1][0])))
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
        image, tampered = f"{reg.hostport}/test/vm@{digest}", f"{reg.hostport}/test/vmbad@{bad}"
        unpinned = f"{reg.hostport}/test/vm@sha256:{'0' * 64}"
        pem = reg.ca_pem.replace("\n", "\\n")
        puller = f'[registries."{reg.hostport}"]\nca = "{pem}"\n'
        work = tmp_path / "pod"
        work.mkdir()
        initdata, hostdata = _initdata(work, _policy([image, tampered]), puller)
        tap = f"ocitap{os.getpid()}"[:15]
        with _pod(pod_image, work, reg, initdata, hostdata, tap) as (vm, agent):
            assert "event=measured_config_installed" in vm.text()
            iface = types_pb2.Interface(device="eth0", name="eth0", mtu=1500, hwAddr=MAC, type="virtual",
                                        IPAddresses=[types_pb2.IPAddress(family=0, address="10.211.0.2",
                                                                         mask="30")])
            agent.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface),
                       types_pb2.Interface)
            default = types_pb2.Route(dest="", gateway="10.211.0.1", device="eth0", family=0)
            routes = agent_pb2.Routes(Routes=[default])
            agent.call("UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=routes), agent_pb2.Routes)
            shm = agent_pb2.Storage(driver="ephemeral", source="shm", fstype="tmpfs",
                                    options=["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"],
                                    mount_point="/run/kata-containers/sandbox/shm")
            agent.call("CreateSandbox", agent_pb2.CreateSandboxRequest(
                hostname="pull-pod", sandbox_id=SANDBOX_ID, sandbox_pidns=True, storages=[shm]), _empty())
            resolv = f"/run/kata-containers/shared/containers/{SANDBOX_ID}-0123456789abcdef-resolv.conf"
            agent.call("CopyFile", agent_pb2.CopyFileRequest(path=resolv, file_size=0, file_mode=0o100644,
                                                             dir_mode=0x800001E8), _empty())
            agent.call("CreateContainer", pause_request(resolv), _empty())
            agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=SANDBOX_ID), _empty())

            assert _run(agent, "c1", image) == b"pulled by digest\n"
            fetched = {str(Digest.of(d)): blob_gets(reg, "test/vm", Digest.of(d)) for d, _, _ in layers}
            assert set(fetched.values()) == {1}, fetched
            assert _run(agent, "c2", image) == b"pulled by digest\n"  # second container: from the cache
            assert {k: blob_gets(reg, "test/vm", k) for k in fetched} == fetched

            with pytest.raises(TtrpcError) as exc:
                agent.call("CreateContainer", _pull_request("c3", tampered, ["/bin/busybox", "true"], agent),
                           _empty(), timeout=600)
            assert "BlobMismatchError" in exc.value.status.message
            assert str(Digest.of(bad_layers[-1][0])) in exc.value.status.message
            with pytest.raises(TtrpcError):
                agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c3"), _empty())

            before = len(reg.requests())
            with pytest.raises(TtrpcError) as exc:
                agent.call("CreateContainer", _pull_request("c4", unpinned, ["/bin/busybox", "true"], agent),
                           _empty(), timeout=600)
            assert exc.value.code == Code.PERMISSION_DENIED
            assert len(reg.requests()) == before
            agent.call("DestroySandbox", agent_pb2.DestroySandboxRequest(), _empty())
    finally:
        reg.close()
