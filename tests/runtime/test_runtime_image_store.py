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


@contextlib.contextmanager
def _environment(work: Path, config: Path, shim_env: dict[str, str] | None = None) -> Iterator[Env]:
    """containerd (CRI + CNI, our shim guest-pulling), a registry in its namespace with the store
    image (random data + marker) and the too-big image, both already pulled by containerd."""
    with running_containerd(cri_runtime_config=config, cni=True, shim_env=shim_env) as ctd:
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
                    if e.timings:
                        shown = ", ".join(f"{k}={v:.2f}" for k, v in e.timings.items())
                        print(f"\nimage store timings (s, MiB): {shown}")
                finally:
                    for sid in list(e.sandboxes):
                        with contextlib.suppress(Exception):
                            _end(e, sid)
            finally:
                client.close()
        deadline = time.monotonic() + 60
        while shim_processes(Path(ctd.env["CONTRAST_CC_RUN_DIR"])) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert shim_processes(Path(ctd.env["CONTRAST_CC_RUN_DIR"])) == []


def _missing() -> str | None:
    from tools.vm.qemu import qemu_available

    reason = containerd_missing(cni=True) or unavailable() or qemu_available()
    if reason is None and not os.path.exists("/dev/net/tun"):
        reason = "no /dev/net/tun for the pods' taps"
    return reason


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    from tools.vm.guest_tests import pod_image_dir

    reason = _missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("store")
    with _environment(work, guest_pull_config(pod_image_dir(request.config), work)) as e:
        yield e


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
            'busybox awk \'$5 == "/" {print "rootmount", $0}\' /proc/self/mountinfo; '
            "busybox df -k / | busybox awk 'NR == 2 {print \"availkb\", $4}'; "
            "sync; echo checked")  # sync: what the pull wrote is on the disk when the host looks


def _root_mount(log: str) -> str:
    lines = [line.split("rootmount ", 1)[1] for line in log.splitlines() if "rootmount " in line]
    assert lines, log
    return lines[-1]


PULLED = r"event=image_pulled .* seconds=([\d.]+)"  # fetched, verified, cached
UNPACKED = r"event=rootfs_unpacked .* seconds=([\d.]+)"


def _guest_seconds(console: str, pattern: str) -> float:
    """A duration the guest logged (the last match), e.g. the pull's fetch+verify seconds."""
    found = re.findall(pattern, console)
    assert found, pattern
    return float(found[-1])


def _changed_blocks(before: bytes, after: bytes) -> int:
    size = min(len(before), len(after))
    return sum(before[i:i + BLOCK] != after[i:i + BLOCK] for i in range(0, size, BLOCK))


def test_a_pulled_image_goes_to_the_encrypted_store_not_to_ram(env: Env) -> None:
    """The layer is cached and unpacked on the store: the disk file starts with a LUKS2 header with
    hmac(sha256) integrity, at least the layer's size of it is written during the pull (allocated
    blocks and changed ciphertext blocks), none of the plaintext (marker, random data, compressed
    layer) is in it, the container's root is on the store's device-mapper device, the guest says it pulled
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
    # the container's root: the store's directory for it, on the ext4 inside a device-mapper device
    fields = root.split()
    assert fields[3] == f"/rootfs/{cid}/rootfs", root
    assert root.split(" - ")[1].startswith("ext4 /dev/dm-"), root
    console = pod.console()
    assert re.search(rf"event=guest_pull_destination container_id={cid} store=image-store "
                     rf"cache=/run/kata-containers/image-store/cache ", console), console[-3000:]
    assert f"event=rootfs_unpacked dest=/run/kata-containers/image-store/rootfs/{cid}/rootfs" in console
    env.timings["guest_store_open"] = _guest_seconds(console, r"event=volume_opened name=image-store .*"
                                                              r"total_ms=(\d+)") / 1000
    env.timings["guest_pull_onto_store"] = _guest_seconds(console, PULLED)
    env.timings["guest_unpack_onto_store"] = _guest_seconds(console, UNPACKED)
    after = disk.read_bytes()
    grown = disk.stat().st_blocks * 512 - blocks_before
    changed = _changed_blocks(before, after) * BLOCK
    env.timings["store_allocated_mib_after_pull"] = disk.stat().st_blocks * 512 / (1 << 20)
    env.timings["store_allocated_mib_before_pull"] = blocks_before / (1 << 20)
    env.timings["store_changed_mib_during_pull"] = changed / (1 << 20)
    # the cached blob and the unpacked random file: the layer's bytes reached the disk twice, not RAM
    assert changed >= len(image.layer) + RANDOM_BYTES, (changed, len(image.layer))
    # the store is formatted unwiped (a fresh key: no old sector can verify), so the sparse file
    # grows only with what the guest writes, and the pull grew it by at least the layer
    assert blocks_before < disk.stat().st_size // 2, blocks_before
    assert grown >= len(image.layer), (grown, len(image.layer))
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
    assert " - ext4 " not in _root_mount(log) and f"/rootfs/{cid}/" not in _root_mount(log), log
    print(f"\nroot of the RAM pod's container: {_root_mount(log)}")
    assert f"event=guest_pull_destination container_id={cid} store=memory " in ram.console()
    env.timings["guest_pull_into_ram"] = _guest_seconds(ram.console(), PULLED)
    env.timings["guest_unpack_into_ram"] = _guest_seconds(ram.console(), UNPACKED)
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
    small = (pod.logs / "small.log").read_text()
    assert (st.state, st.exit_code) == (env.client.pb.CONTAINER_EXITED, 0), small
    # A container run again and again (a crash loop) must not fill the store: its unpacked rootfs
    # leaves the store with it. More rounds than the free space holds rootfs copies.
    avail = int(next(line.split("availkb ", 1)[1] for line in small.splitlines() if "availkb " in line)) << 10
    rounds = avail // RANDOM_BYTES + 2
    pb = env.client.pb
    env.client.call("RemoveContainer", pb.RemoveContainerRequest(container_id=ok))
    gets = _blob_gets(env)
    for i in range(rounds):
        again = _create(env, pod, f"round-{i}", env.image.ref, ["sh", "-c", _check_script(env.image)])
        _start(env, again)
        st = _wait_exit(env, again)
        assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 0), (i, rounds, avail)
        env.client.call("RemoveContainer", pb.RemoveContainerRequest(container_id=again))
    env.timings["restart_rounds_in_store"] = rounds
    assert _blob_gets(env) == gets  # the blob stays cached on the store for the pod's containers
    env.timings["store_free_mib_with_one_image"] = avail / (1 << 20)
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
    # the guest's own dirty pages first: written after the host's forgery they would be the guest's
    # data with valid tags again, not the host's
    assert exec_("sync").exit_code == 0
    disk = pod.vm / "image-store.raw"
    forged = _planted_ext4(env.work, disk.stat().st_size)
    with open(disk, "r+b") as f:  # what a host with the disk file can do at any time
        f.write(forged)
        f.flush()
        os.fsync(f.fileno())
    # the guest's page cache dropped: from now on every page comes from the disk. The shell doing it
    # may already die of SIGBUS (its own code pages read EIO), which is the point.
    dropped = exec_("echo 3 > /proc/sys/vm/drop_caches")
    assert dropped.exit_code in (0, 128 + 7), dropped
    read = exec_(f"cat /{MARKER_PATH}")
    assert read.exit_code != 0, read
    assert b"host-planted" not in read.stdout + read.stderr and image.marker not in read.stdout, read
    # SIGBUS (the program's own pages) or a read error (EIO; EILSEQ from a failed tag), never data
    failed = (b"I/O error", b"Input/output error", b"Invalid or incomplete multibyte")
    assert read.exit_code == 128 + 7 or any(f in read.stderr for f in failed), read
    again = _create(env, pod, "again", image.ref, ["sh", "-c", "cat /etc/store-marker; echo RAN"])
    with pytest.raises(grpc.RpcError) as info:
        _start(env, again)
    log = pod.logs / "again.log"
    assert not log.exists() or ("RAN" not in log.read_text() and "host-planted" not in log.read_text())
    console = pod.console()
    assert "host-planted" not in console
    print(f"\nswap: read exit {read.exit_code} {read.stderr[-200:]!r}; new container: "
          f"{str(info.value.details())[-300:]}")
    _end(env, pod.sid)
    assert not disk.exists()



# -- a hostile host's runtime ---------------------------------------------------------------------------

# Put first on the shim's PYTHONPATH as ``sitecustomize``: the host's own (modified) runtime. Before it
# hotplugs the image store's disk file it fills it with a plaintext ext4 of its own (whose blob cache
# holds a forged blob under the image's layer digest); in mode "plaintext" it also sends the store's
# CreateSandbox storage without ``encryption_key=ephemeral``.
HOSTILE_RUNTIME = '''
import os
import shutil
from pathlib import Path

import runtime.podvm as podvm
import runtime.service as service

_DIR = Path(os.environ["CG_HOSTILE_STORE"])
_attach = podvm.PodVM.attach_disk
_storage = service.image_store_storage


async def attach_disk(self, path, **kw):
    if path.name == "image-store.raw":
        with open(_DIR / "planted.raw", "rb") as src, open(path, "r+b") as dst:
            shutil.copyfileobj(src, dst)
    return await _attach(self, path, **kw)


def image_store_storage():
    fields = _storage()
    if (_DIR / "mode").read_text().strip() == "plaintext":
        fields["driver_options"] = ["create_filesystem"]
    return fields


podvm.PodVM.attach_disk = attach_disk
service.image_store_storage = image_store_storage
'''


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    from tools.vm.containerd import REPO
    from tools.vm.guest_tests import pod_image_dir

    reason = _missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("hostile")
    site = work / "hostile-runtime"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HOSTILE_RUNTIME)
    (site / "mode").write_text("plant\n")
    shim_env = {"PYTHONPATH": f"{site}:{REPO}", "CG_HOSTILE_STORE": str(site)}
    with _environment(work, guest_pull_config(pod_image_dir(request.config), work), shim_env) as e:
        yield e


def _plant(env: Env, mode: str) -> None:
    """The host's plaintext ext4 for the store (64 MiB), its cache holding a forged blob of the right
    name and size for the image's layer, and the marker with the host's text."""
    site = env.work / "hostile-runtime"
    tree = env.work / "planted-tree"
    if not tree.exists():
        blob = tree / "cache/blobs/sha256" / env.image.layer_digest.removeprefix("sha256:")
        blob.parent.mkdir(parents=True)
        forged = b"host-planted layer\n"
        blob.write_bytes(forged + bytes(len(env.image.layer) - len(forged)))
        (tree / "etc").mkdir()
        (tree / "etc/store-marker").write_text("host-planted marker\n")
        img = site / "planted.raw"
        img.write_bytes(b"")
        os.truncate(img, 64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img)], check=True, timeout=60)
    (site / "mode").write_text(mode + "\n")


def _blob_gets(env: Env) -> int:
    path = f"/v2/test/store/blobs/{env.image.layer_digest}"
    return sum(1 for m, p, code in env.reg.requests() if (m, p, code) == ("GET", path, 200))


def test_a_host_that_plants_its_own_filesystem_in_the_store_disk_gets_it_reformatted(hostile: Env) -> None:
    """The host's runtime hands the guest a store disk holding a plaintext ext4 (with a forged blob in
    the very cache path the puller uses): the guest formats it with its own key, pulls the layer from
    the registry again (the host's cache is gone) and the container sees the image's marker."""
    env = hostile
    _plant(env, "plant")
    gets = _blob_gets(env)
    pod = _run_pod(env, "planted", store=STORE_SIZE)
    disk = pod.vm / "image-store.raw"
    with open(disk, "rb") as f:
        assert f.read(6) == b"LUKS\xba\xbe"  # the host's ext4 was formatted over
    assert re.search(r"event=volume_opened name=image-store \S+ formatted=True", pod.console()), \
        pod.console()[-3000:]
    cid = _create(env, pod, "check", env.image.ref, ["sh", "-c", _check_script(env.image)])
    _start(env, cid)
    st = _wait_exit(env, cid)
    log = (pod.logs / "check.log").read_text()
    assert (st.state, st.exit_code) == (env.client.pb.CONTAINER_EXITED, 0), (st, log)
    assert _root_mount(log).split()[3] == f"/rootfs/{cid}/rootfs", log
    assert "host-planted" not in log
    assert _blob_gets(env) == gets + 1  # fetched and verified, not taken from the host's "cache"
    _end(env, pod.sid)


def test_a_host_that_sends_the_store_without_its_key_is_refused_by_the_guest(hostile: Env) -> None:
    """The host's runtime drops ``encryption_key=ephemeral`` from the store storage (and plants its
    ext4 in the disk): CreateSandbox is refused by the guest itself (this pod's policy allows every
    request, so no policy rule is what stops it), RunPodSandbox fails naming the store, and no shim,
    VM or disk file is left."""
    env = hostile
    _plant(env, "plaintext")
    pb = env.client.pb
    logs = env.work / "logs-plaintext"
    logs.mkdir()
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="plaintext", uid="uid-plaintext", namespace="default", attempt=0),
        hostname="plaintext", log_directory=str(logs),
        annotations={initdata_format.ANNOTATION: env.initdata, IMAGE_STORE_ANNOTATION: STORE_SIZE})
    with pytest.raises(grpc.RpcError) as info:
        env.client.call("RunPodSandbox", pb.RunPodSandboxRequest(config=config,
                                                                 runtime_handler="contrast-cc"))
    details = str(info.value.details())
    assert "image store storage" in details and "encryption_key=ephemeral" in details, details
    deadline = time.monotonic() + 60
    while shim_processes(env.rundir) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert shim_processes(env.rundir) == []
    assert list(env.rundir.glob("*/vm/image-store.raw")) == []
    print(f"\nplaintext store refused: {details[-400:]}")
