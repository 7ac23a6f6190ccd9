"""The secure image store through Debian's containerd (CRI + CNI) and our shim in guest-pull mode.

A pod annotated ``contrast.edgeless.systems/image-store-size`` gets a sparse scratch disk file
(``<shim run dir>/<sandbox>/vm/image-store.raw``) hotplugged before CreateSandbox; the guest formats it
LUKS2 + hmac(sha256) with a key born in the VM and its puller caches and unpacks the workload image
there instead of in RAM. The image comes from a TLS registry in containerd's network namespace
(``tools.vm.registry.containerd_registry``) and carries megabytes of random data and a marker file.
Everything is looked at from the host's side: the disk file, its allocated blocks, its bytes, the
guest's console. One pod VM per scenario (TCG boots are slow): the store pod, the same image pulled
into RAM (the peer of the pull-time measurement), a store too small for the image, and a host that
replaces the store's disk with a plaintext filesystem of its own while the pod runs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from attestation import initdata as initdata_format
from guest.storage import IMAGE_STORE_ANNOTATION
from tools.vm.containerd import (
    Containerd,
    busybox_image_archive,
    containerd_missing,
    guest_pull_config,
    running_containerd,
    shim_processes,
)
from tools.vm.cri.client import CriClient
from tools.vm.registry import Registry, containerd_registry, unavailable

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.encrypted_storage]

RANDOM_BYTES = 6 << 20  # incompressible: the layer is at least this big, packed or not
ZEROS_BYTES = 96 << 20  # the "too big" image: more than the whole 64 MiB store once unpacked
STORE_SIZE = "64Mi"
BLOCK = 4096
MARKER_PATH, RANDOM_PATH = "etc/store-marker", "data/random.bin"


@dataclass
class Image:
    ref: str  # by digest, in the registry
    layer_digest: str
    layer: bytes  # the compressed blob as the registry serves it
    random: bytes = b""
    marker: bytes = b""


@dataclass
class Env:
    ctd: Containerd
    client: CriClient
    reg: Registry
    initdata: str
    image: Image
    big: Image
    work: Path
    sandboxes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rundir(self) -> Path:
        return Path(self.ctd.env["CONTRAST_CC_RUN_DIR"])


def _layer_of(archive: Path, manifest_digest: str) -> tuple[str, bytes]:
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return member.read()

        (layer,) = json.loads(blob(manifest_digest))["layers"]
        return str(layer["digest"]), blob(layer["digest"])


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
    work = tmp_path_factory.mktemp("store")
    config = guest_pull_config(pod_image_dir(request.config), work)
    with running_containerd(cri_runtime_config=config, cni=True) as ctd:
        k8s = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        sandbox_archive = work / "sandbox.tar"
        busybox_image_archive(sandbox_archive)  # containerd's sandbox image (the guest runs its own pause)
        assert k8s.ctr("image", "import", str(sandbox_archive)).returncode == 0
        random = os.urandom(RANDOM_BYTES)
        marker = b"image-store-plaintext-marker-" + os.urandom(12).hex().encode() + b"\n"
        archive, big_archive = work / "store.tar", work / "big.tar"
        digest = busybox_image_archive(archive, {MARKER_PATH: marker, RANDOM_PATH: random})
        big_digest = busybox_image_archive(big_archive, {"data/zeros.bin": bytes(ZEROS_BYTES)})
        with containerd_registry(ctd, work / "reg") as reg:
            reg.push_archive(archive, "test/store", "1")
            reg.push_archive(big_archive, "test/big", "1")
            pem = reg.ca_pem.replace("\n", "\\n")
            puller = f'[registries."{reg.hostport}"]\nca = "{pem}"\n'
            toml = initdata_format.encode(initdata_format.Initdata(
                "0.1.0", "sha256", {"policy.rego": _policy_allow_all(), "imagepuller.toml": puller}))
            image = Image(f"{reg.hostport}/test/store@{digest}", *_layer_of(archive, digest), random, marker)
            big = Image(f"{reg.hostport}/test/big@{big_digest}", *_layer_of(big_archive, big_digest))
            client = CriClient(ctd.socket)
            try:
                client.wait_ready()
                for ref in (image.ref, big.ref):  # kubelet's PullImage: containerd needs the image too
                    client.call("PullImage", client.pb.PullImageRequest(image=client.pb.ImageSpec(image=ref)))
                e = Env(ctd, client, reg, initdata_format.encode_annotation(toml), image, big, work)
                try:
                    yield e
                    shown = ", ".join(f"{k}={v:.2f}" for k, v in e.timings.items())
                    print(f"\nimage store timings (s, MiB): {shown}")
                finally:
                    for sid in e.sandboxes:
                        with contextlib.suppress(Exception):
                            _end(e, sid)
            finally:
                client.close()
        deadline = time.monotonic() + 60
        while shim_processes(Path(ctd.env["CONTRAST_CC_RUN_DIR"])) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert shim_processes(Path(ctd.env["CONTRAST_CC_RUN_DIR"])) == []


def _end(env: Env, sid: str) -> None:
    pb = env.client.pb
    env.client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    env.client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    if sid in env.sandboxes:
        env.sandboxes.remove(sid)


@dataclass
class Pod:
    sid: str
    config: Any
    vm: Path  # the shim's directory of this pod's VM (console.log, image-store.raw)
    logs: Path
    start_seconds: float

    def console(self) -> str:
        return (self.vm / "console.log").read_text(errors="replace")


def _run_pod(env: Env, name: str, *, store: str | None, privileged: bool = False) -> Pod:
    pb = env.client.pb
    logs = env.work / f"logs-{name}"
    logs.mkdir()
    annotations = {initdata_format.ANNOTATION: env.initdata}
    if store is not None:
        annotations[IMAGE_STORE_ANNOTATION] = store
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default", attempt=0),
        hostname=name, log_directory=str(logs), annotations=annotations)
    if privileged:
        config.linux.security_context.privileged = True  # CRI: a privileged container needs a privileged pod
    before = set(env.rundir.glob("*/vm")) if env.rundir.exists() else set()
    t0 = time.monotonic()
    sid = str(env.client.call("RunPodSandbox", pb.RunPodSandboxRequest(
        config=config, runtime_handler="contrast-cc")).pod_sandbox_id)
    elapsed = time.monotonic() - t0
    env.sandboxes.append(sid)
    (vm,) = set(env.rundir.glob("*/vm")) - before
    return Pod(sid, config, vm, logs, elapsed)


def _create(env: Env, pod: Pod, name: str, image: str, command: list[str], *,
            privileged: bool = False) -> str:
    pb = env.client.pb
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                             command=command, log_path=f"{name}.log")
    if privileged:
        cfg.linux.security_context.privileged = True
    return str(env.client.call("CreateContainer", pb.CreateContainerRequest(
        pod_sandbox_id=pod.sid, config=cfg, sandbox_config=pod.config)).container_id)


def _start(env: Env, cid: str) -> float:
    """StartContainer (the shim's task create: the agent's CreateContainer, i.e. the guest's pull and
    unpack, then start); its duration."""
    t0 = time.monotonic()
    env.client.call("StartContainer", env.client.pb.StartContainerRequest(container_id=cid), timeout=600)
    return time.monotonic() - t0


def _wait_exit(env: Env, cid: str, within: float = 180) -> Any:
    pb = env.client.pb
    deadline = time.monotonic() + within
    while True:
        st = env.client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
        if st.state == pb.CONTAINER_EXITED or time.monotonic() > deadline:
            return st
        time.sleep(0.3)


def _check_script(image: Image) -> str:
    """The container's check: the marker and the random file have the image's content; it prints the
    mount under its own root (where the guest put the unpacked image)."""
    marker = hashlib.sha256(image.marker).hexdigest()
    rnd = hashlib.sha256(image.random).hexdigest()
    return (f'[ "$(busybox sha256sum /{MARKER_PATH})" = "{marker}  /{MARKER_PATH}" ] || exit 3; '
            f'[ "$(busybox sha256sum /{RANDOM_PATH})" = "{rnd}  /{RANDOM_PATH}" ] || exit 4; '
            'busybox awk \'$5 == "/" {print "rootmount", $0}\' /proc/self/mountinfo; echo checked')


def _root_mount(log: str) -> str:
    lines = [line.split("rootmount ", 1)[1] for line in log.splitlines() if "rootmount " in line]
    assert lines, log
    return lines[-1]


def _changed_blocks(before: bytes, after: bytes) -> int:
    size = min(len(before), len(after))
    return sum(before[i:i + BLOCK] != after[i:i + BLOCK] for i in range(0, size, BLOCK))


def test_a_pulled_image_goes_to_the_encrypted_store_not_to_ram(env: Env) -> None:
    """The layer is cached and unpacked on the store: the disk file starts with a LUKS2 header with
    hmac(sha256) integrity, at least the layer's size of it is written during the pull (allocated
    blocks and changed ciphertext blocks), none of the plaintext (marker, random data, compressed
    layer) is in it, the container's root is on the store's mapper device, the guest says it pulled
    there; after RemovePodSandbox the file is gone. The same image without the annotation is
    pulled into RAM (the peer of the pull-time comparison) and its root is not on the store."""
    image = env.image
    pod = _run_pod(env, "store", store=STORE_SIZE)
    env.timings["run_pod_sandbox_with_store"] = pod.start_seconds
    disk = pod.vm / "image-store.raw"
    before = disk.read_bytes()
    blocks_before = disk.stat().st_blocks * 512
    assert before[:6] == b"LUKS\xba\xbe" and before[6:8] == b"\x00\x02", before[:8]
    header = before[4096:4096 + 12288].split(b"\0", 1)[0].decode()
    assert '"integrity":{"type":"hmac(sha256)"' in header.replace(" ", ""), header[:400]
    cid = _create(env, pod, "check", image.ref, ["sh", "-c", _check_script(image)])
    env.timings["pull_onto_store"] = _start(env, cid)
    st = _wait_exit(env, cid)
    log = (pod.logs / "check.log").read_text()
    assert (st.state, st.exit_code) == (env.client.pb.CONTAINER_EXITED, 0), (st, log)
    assert "stdout F checked" in log, log
    root = _root_mount(log)
    assert root.split(" - ")[1].startswith("ext4 /dev/mapper/image-store "), root
    console = pod.console()
    assert re.search(rf"event=guest_pull_destination container_id={cid} store=image-store "
                     rf"cache=/run/kata-containers/image-store/cache ", console), console[-3000:]
    assert f"event=rootfs_unpacked dest=/run/kata-containers/image-store/rootfs/{cid}/rootfs" in console
    after = disk.read_bytes()
    grown = disk.stat().st_blocks * 512 - blocks_before
    changed = _changed_blocks(before, after) * BLOCK
    env.timings["store_allocated_mib_after_pull"] = disk.stat().st_blocks * 512 / (1 << 20)
    env.timings["store_allocated_mib_before_pull"] = blocks_before / (1 << 20)
    env.timings["store_changed_mib_during_pull"] = changed / (1 << 20)
    # cached blob + unpacked file: the layer's bytes reached the disk (twice), not RAM
    assert changed >= len(image.layer), (changed, len(image.layer))
    assert grown >= len(image.layer) or blocks_before >= disk.stat().st_size, (grown, blocks_before)
    for needle in (image.marker.strip(), image.random[1 << 20:(1 << 20) + 64],
                   image.random[-4096:-4032], image.layer[len(image.layer) // 2:len(image.layer) // 2 + 64]):
        assert needle not in after, needle[:16]
    _end(env, pod.sid)
    assert not disk.exists() and not pod.vm.exists()

    ram = _run_pod(env, "ram", store=None)
    env.timings["run_pod_sandbox_without_store"] = ram.start_seconds
    assert not (ram.vm / "image-store.raw").exists()
    cid = _create(env, ram, "check", image.ref, ["sh", "-c", _check_script(image)])
    env.timings["pull_into_ram"] = _start(env, cid)
    st = _wait_exit(env, cid)
    log = (ram.logs / "check.log").read_text()
    assert (st.state, st.exit_code) == (env.client.pb.CONTAINER_EXITED, 0), (st, log)
    assert "image-store" not in _root_mount(log), log
    assert f"event=guest_pull_destination container_id={cid} store=memory " in ram.console()
    _end(env, ram.sid)


def test_an_image_bigger_than_the_store_fails_with_enospc_and_leaves_nothing(env: Env) -> None:
    """96 MiB of (compressible) zeros into a 64 MiB store: StartContainer fails in bounded time with
    an error naming ENOSPC and the image store; what was unpacked is removed (a small image then
    fits in the same store); after RemovePodSandbox no shim, VM or disk file is left."""
    pod = _run_pod(env, "full", store=STORE_SIZE)
    cid = _create(env, pod, "big", env.big.ref, ["sh", "-c", "echo RAN"])
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        _start(env, cid)
    env.timings["enospc_failure"] = time.monotonic() - t0
    details = str(info.value.details())
    assert "ENOSPC" in details and "image store is full" in details, details
    assert IMAGE_STORE_ANNOTATION in details, details
    log = pod.logs / "big.log"
    assert not log.exists() or "RAN" not in log.read_text()
    ok = _create(env, pod, "small", env.image.ref, ["sh", "-c", _check_script(env.image)])
    _start(env, ok)
    st = _wait_exit(env, ok)
    assert (st.state, st.exit_code) == (env.client.pb.CONTAINER_EXITED, 0),\
        (pod.logs / "small.log").read_text()
    _end(env, pod.sid)
    assert not pod.vm.exists()
    deadline = time.monotonic() + 60
    while _processes_of(env, pod) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _processes_of(env, pod) == []


def _processes_of(env: Env, pod: Pod) -> list[int]:
    """The shim daemon and QEMU of this pod (their command lines name its id or its VM directory)."""
    out = []
    for pid in shim_processes(env.rundir):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if pod.sid.encode() in cmdline or str(pod.vm).encode() in cmdline:
                out.append(pid)
    return out


def _planted_ext4(work: Path, size: int) -> bytes:
    """A plaintext ext4 of the store's size whose files claim to be the image's (the host's forgery)."""
    planted = work / "planted"
    (planted / "etc").mkdir(parents=True)
    (planted / "etc/store-marker").write_text("host-planted marker\n")
    (planted / "bin").mkdir()
    (planted / "bin/sh").write_text("#!/bin/host-planted\n")
    img = work / "planted.raw"
    img.write_bytes(b"")
    os.truncate(img, size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(planted), str(img)], check=True, timeout=60)
    return img.read_bytes()


def test_a_host_that_swaps_the_store_for_its_own_plaintext_filesystem_gets_io_errors(env: Env) -> None:
    """While the pod runs, the host overwrites the whole store disk file with a plaintext ext4 of its
    own (the image's marker path holding its text). The guest never mounts it: the store stays the
    LUKS2 mapping it opened, and once the guest's page cache is dropped every read of the store fails
    integrity (EIO): the marker reads as an I/O error, never as the host's text, and a new container
    of the image fails instead of running the host's files."""
    image = env.image
    pod = _run_pod(env, "swap", store=STORE_SIZE, privileged=True)
    keeper = _create(env, pod, "keeper", image.ref, ["sleep", "3600"], privileged=True)
    _start(env, keeper)
    pb = env.client.pb

    def exec_(cmd: str) -> Any:
        return env.client.call("ExecSync", pb.ExecSyncRequest(container_id=keeper, cmd=["sh", "-c", cmd],
                                                              timeout=120), timeout=200)

    assert exec_(f"cat /{MARKER_PATH}").stdout == image.marker
    disk = pod.vm / "image-store.raw"
    forged = _planted_ext4(env.work, disk.stat().st_size)
    with open(disk, "r+b") as f:  # what a host with the disk file can do at any time
        f.write(forged)
        f.flush()
        os.fsync(f.fileno())
    dropped = exec_("sync; echo 3 > /proc/sys/vm/drop_caches && echo dropped")
    assert dropped.stdout.strip().endswith(b"dropped"), dropped
    read = exec_(f"cat /{MARKER_PATH}")
    assert read.exit_code != 0 and b"host-planted" not in read.stdout, read
    assert b"I/O error" in read.stderr or b"Input/output error" in read.stderr, read
    again = _create(env, pod, "again", image.ref, ["sh", "-c", "cat /etc/store-marker; echo RAN"])
    with pytest.raises(grpc.RpcError) as info:
        _start(env, again)
    log = pod.logs / "again.log"
    assert not log.exists() or ("RAN" not in log.read_text() and "host-planted" not in log.read_text())
    console = pod.console()
    assert "host-planted" not in console
    print(f"\nswap: read error {read.stderr[-200:]!r}; new container: {str(info.value.details())[-300:]}")
    _end(env, pod.sid)
    assert not disk.exists()

