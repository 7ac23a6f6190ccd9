"""Block volumes of CRI pods through Debian's containerd and our shim: disks hotplugged into the
running pod VM (CRI ``devices`` → the bundle's ``linux.devices`` → QMP blockdev-add/device_add
onto a PCIe root port → the agent's ``Device{type: blk, vm_path: <PCI path>}``).

The host side of each volume is a raw disk file behind a loop device (containerd accepts only device
nodes as a CRI device's host path). Boots are bounded: one pod VM per test."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation import initdata as initdata_format
from tools.vm.containerd import (
    IMAGE_NAME,
    Containerd,
    busybox_image_archive,
    containerd_missing,
    host_erofs_config,
    pinned_policy,
    running_containerd,
    shim_processes,
)
from tools.vm.cri.client import CriClient

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.encrypted_storage]

SECOND_IMAGE = "docker.io/library/cc-second:1"


def _merged(*policies: str) -> str:
    """One allow-all policy pinning the layers of every given pinned_policy."""
    containers: list[object] = []
    for text in policies:
        line = next(x for x in text.splitlines() if x.startswith("policy_data := "))
        containers += json.loads(line.removeprefix("policy_data := "))["containers"]
    head = policies[0].split("policy_data := ")[0]
    return head + "policy_data := " + json.dumps({"containers": containers}) + "\n"


@contextlib.contextmanager
def loop_device(disk: Path) -> Iterator[str]:
    out = subprocess.run(["losetup", "--find", "--show", str(disk)], capture_output=True, text=True,
                         check=True, timeout=30)
    dev = out.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False, timeout=30)


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[tuple[Containerd, CriClient, str, Path]]:
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    reason = containerd_missing() or qemu_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("volumes")
    config = host_erofs_config(pod_image_dir(request.config), work)
    with running_containerd(cri_runtime_config=config) as ctd:
        ns_ctd = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        # a second image (one more file, so another layer) under its own name, then the sandbox image
        second = ctd.base / "second.tar"
        second_digest = busybox_image_archive(second, {"etc/second": b"from the second image\n"})
        imported = ns_ctd.ctr("image", "import", str(second))
        assert imported.returncode == 0, imported.stderr
        tagged = ns_ctd.ctr("image", "tag", IMAGE_NAME, SECOND_IMAGE)
        assert tagged.returncode == 0, tagged.stderr
        archive = ctd.base / "image.tar"
        digest = busybox_image_archive(archive)
        imported = ns_ctd.ctr("image", "import", str(archive))
        assert imported.returncode == 0, imported.stderr
        policy = _merged(pinned_policy(ns_ctd, digest, work / "layers"),
                         pinned_policy(ns_ctd, second_digest, work / "layers"))
        toml = initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": policy}))
        client = CriClient(ctd.socket)
        try:
            client.wait_ready()
            yield ctd, client, initdata_format.encode_annotation(toml), work
        finally:
            client.close()
        rundir = Path(ctd.env["CONTRAST_CC_RUN_DIR"])
        deadline = time.monotonic() + 30
        while shim_processes(rundir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shim_processes(rundir) == []


def _sandbox_config(pb: object, name: str, logs: Path, initdata: str) -> object:
    return pb.PodSandboxConfig(  # type: ignore[attr-defined]
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default", attempt=0),  # type: ignore[attr-defined]
        hostname=name,
        log_directory=str(logs),
        annotations={initdata_format.ANNOTATION: initdata},
        linux=pb.LinuxPodSandboxConfig(  # type: ignore[attr-defined]
            security_context=pb.LinuxSandboxSecurityContext(  # type: ignore[attr-defined]
                namespace_options=pb.NamespaceOption(network=pb.NODE)  # type: ignore[attr-defined]
            )
        ),
    )


def test_a_volume_device_is_hotplugged_into_the_running_pod_vm(
    cri: tuple[Containerd, CriClient, str, Path],
) -> None:
    ctd, client, initdata, work = cri
    pb = client.pb
    logs = work / "logs-hotplug"
    logs.mkdir()
    disk = work / "volume.raw"
    disk.write_bytes(b"")
    disk.chmod(0o600)
    import os

    os.truncate(disk, 16 << 20)
    with loop_device(disk) as host_dev:
        host_rdev = os.stat(host_dev).st_rdev
        sandbox_config = _sandbox_config(pb, "hotplug-pod", logs, initdata)
        t0 = time.monotonic()
        sid = client.call("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config,
                                                                   runtime_handler="contrast-cc")).pod_sandbox_id
        print(f"RunPodSandbox without an image store: {time.monotonic() - t0:.2f}s")
        try:
            script = ("[ -b /dev/xvda ] || exit 9; echo hotplug-marker > /dev/xvda; read -r l < /dev/xvda; "
                      "echo \"read back $l\"; sleep 600")
            cfg = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="volume"),
                image=pb.ImageSpec(image=IMAGE_NAME),
                command=["sh", "-c", script],
                log_path="volume.log",
                devices=[pb.Device(container_path="/dev/xvda", host_path=host_dev, permissions="rwm")],
            )
            cid = client.call("CreateContainer", pb.CreateContainerRequest(
                pod_sandbox_id=sid, config=cfg, sandbox_config=sandbox_config)).container_id
            t0 = time.monotonic()  # containerd's CRI creates the task (our shim's Create) here
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            started = time.monotonic() - t0
            deadline = time.monotonic() + 120
            log = ""
            while "read back" not in log and time.monotonic() < deadline:
                time.sleep(0.3)
                log = (logs / "volume.log").read_text() if (logs / "volume.log").exists() else ""
            assert "stdout F read back hotplug-marker" in log, log
            # The container's node carries the guest's number (virtio-blk), not the host's loop device.
            ex = client.call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=["ls", "-l", "/dev/xvda"],
                                                            timeout=60))
            assert ex.exit_code == 0 and ex.stdout.startswith(b"b"), ex
            assert f"{os.major(host_rdev)}, {os.minor(host_rdev)}".encode() not in ex.stdout, ex
            print(f"StartContainer (task create with one hotplugged disk, start): {started:.2f}s")
            # removing the container unplugs its disk from the running VM (the pod stays)
            client.call("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=5))
            client.call("RemoveContainer", pb.RemoveContainerRequest(container_id=cid))
            deadline = time.monotonic() + 30
            while "event=disk_unplugged" not in ctd.log() and time.monotonic() < deadline:
                time.sleep(0.3)
            assert "event=disk_unplugged pci_path=10/00" in ctd.log(), ctd.log()[-3000:]
        finally:
            client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
            client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
        with open(host_dev, "rb") as f:
            assert f.read(15) == b"hotplug-marker\n"


def test_the_image_store_disk_is_hotplugged_and_encrypted_in_the_vm(
    cri: tuple[Containerd, CriClient, str, Path],
) -> None:
    """A pod with Contrast's image-store annotation: the shim hotplugs a sparse scratch disk at sandbox
    start, the guest formats it as LUKS2 (aes-xts + hmac-sha256) with a key born in the VM and mounts
    it as the image store; the host's file holds the header and ciphertext only."""
    ctd, client, initdata, work = cri
    pb = client.pb
    logs = work / "logs-store"
    logs.mkdir()
    sandbox_config = _sandbox_config(pb, "store-pod", logs, initdata)
    sandbox_config.annotations["contrast.edgeless.systems/image-store-size"] = "64Mi"  # type: ignore[attr-defined]
    t0 = time.monotonic()
    sid = client.call("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config,
                                                               runtime_handler="contrast-cc")).pod_sandbox_id
    try:
        started = time.monotonic() - t0
        stores = list(Path(ctd.env["CONTRAST_CC_RUN_DIR"]).glob("*/vm/image-store.raw"))
        assert len(stores) == 1
        data = stores[0].read_bytes()
        assert data[:6] == b"LUKS\xba\xbe" and data[6:8] == b"\x00\x02", data[:8]
        header = data[4096:4096 + 12288].split(b"\0", 1)[0].decode()
        assert '"integrity":{"type":"hmac(sha256)"' in header.replace(" ", ""), header[:400]
        assert b"secure-volume" not in data  # the ext4 label exists only inside the encrypted device
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                                 image=pb.ImageSpec(image=IMAGE_NAME),
                                 command=["sh", "-c", "echo store pod runs"], log_path="c.log")
        cid = client.call("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=cfg, sandbox_config=sandbox_config)).container_id
        client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
            if st.state == pb.CONTAINER_EXITED:
                break
            time.sleep(0.3)
        assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 0), st
        print(f"RunPodSandbox with a 64 MiB image store (hotplug, format, mkfs, mount): {started:.2f}s")
    finally:
        client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert list(Path(ctd.env["CONTRAST_CC_RUN_DIR"]).glob("*/vm/image-store.raw")) == []


def test_a_workload_image_other_than_the_sandbox_image_has_its_layers_hotplugged(
    cri: tuple[Containerd, CriClient, str, Path],
) -> None:
    """host-EROFS: the VM booted with the sandbox image's layers; the second image's layer is
    hotplugged read-only at CreateContainer and named by its PCI path; dm-verity with the pinned
    root hash still guards every block read."""
    _, client, initdata, work = cri
    pb = client.pb
    logs = work / "logs-second"
    logs.mkdir()
    sandbox_config = _sandbox_config(pb, "second-pod", logs, initdata)
    sid = client.call("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config,
                                                               runtime_handler="contrast-cc")).pod_sandbox_id
    try:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="second"),
                                 image=pb.ImageSpec(image=SECOND_IMAGE),
                                 command=["cat", "/etc/second"], log_path="second.log")
        cid = client.call("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=cfg, sandbox_config=sandbox_config)).container_id
        t0 = time.monotonic()
        client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
        started = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
            if st.state == pb.CONTAINER_EXITED:
                break
            time.sleep(0.3)
        assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 0), st
        assert "stdout F from the second image" in (logs / "second.log").read_text()
        print(f"StartContainer with the second image's layer hotplugged: {started:.2f}s")
    finally:
        client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))


INITIALIZER_IMAGE = "docker.io/library/cc-initializer:initializer"
SECRET_PATH = "/contrast/secrets/workload-secret-seed"


def _layer_pins(ctd: Containerd, manifest_digest: str, cache: Path) -> list[dict[str, str]]:
    """Every layer of the image pinned (erofs image built as the shim builds it)."""
    from image.layers import build_layer_image
    from oci import LayerSource

    manifest = json.loads(ctd.ctr("content", "get", manifest_digest).stdout)
    pins = []
    for i, layer in enumerate(manifest["layers"]):
        blob = cache.parent / f"pv-layer-{i}.blob"
        blob.write_bytes(subprocess.run(["ctr", "--address", str(ctd.socket), "--namespace", ctd.namespace,
                                         "content", "get", layer["digest"]], capture_output=True, check=True,
                                        timeout=120).stdout)
        pins.append(dict(build_layer_image(LayerSource(layer["digest"], "gzip", blob), cache).pin()))
    return pins


def _initializer_image(ctd: Containerd, work: Path) -> str:
    """The project's initializer image (with cryptsetup) imported into containerd; its manifest digest."""
    import tarfile

    from image.containers.build import IMAGES, build_layout

    layout = work / "initializer-layout"
    (desc,) = build_layout(Path(__file__).resolve().parents[2], layout,
                           [s for s in IMAGES if s.name == "initializer"]).values()
    archive = work / "initializer.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    ns = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
    out = ns.ctr("image", "import", "--base-name", INITIALIZER_IMAGE.rsplit(":", 1)[0], str(archive))
    assert out.returncode == 0, out.stderr
    return str(desc.digest)


def _secure_pv_container(pb: Any, name: str, host_dev: str, secret_file: Path) -> Any:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=INITIALIZER_IMAGE),
        command=["python3", "-m", "initializer", "cryptsetup", "-d", "/dev/csi0", "-m", "/state",
                 "--secret-file", SECRET_PATH, "--done-file", "/done"],
        log_path=f"{name}.log",
        devices=[pb.Device(container_path="/dev/csi0", host_path=host_dev, permissions="rwm")],
        mounts=[pb.Mount(container_path=SECRET_PATH, host_path=str(secret_file), readonly=True)],
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(privileged=True)),
    )


def _wait_exec(client: CriClient, cid: str, cmd: list[str], within: float = 180) -> Any:
    pb = client.pb
    deadline = time.monotonic() + within
    while True:
        st = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
        if st.state == pb.CONTAINER_EXITED:
            return pb.ExecSyncResponse(exit_code=-1, stderr=f"container exited {st.exit_code}".encode())
        ex = client.call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=60))
        if ex.exit_code == 0 or time.monotonic() > deadline:
            return ex
        time.sleep(1)


def test_secure_pv_through_containerd_survives_a_vm_restart_and_refuses_another_secret(
    cri: tuple[Containerd, CriClient, str, Path],
) -> None:
    """Contrast's secure-pv as a CRI pod: the initializer (privileged, the volumeDevice at /dev/csi0)
    opens the hotplugged disk as LUKS2 + hmac keyed from the workload secret, formats it on first use
    and mounts it at /state; the host's disk file has no plaintext; after the VM is gone a second pod
    of the same workload reads the data; another workload secret cannot open it and changes nothing."""
    import hashlib
    import os

    ctd, client, _, work = cri
    pb = client.pb
    ns = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
    digest = _initializer_image(ctd, work)
    busybox = next(line.split()[2] for line in ns.ctr("image", "ls").stdout.splitlines()
                   if line.startswith(IMAGE_NAME + " "))
    pins = _layer_pins(ns, busybox, work / "layers") + _layer_pins(ns, digest, work / "layers")
    from tools.vm.pod import RPC_NAMES

    policy = "\n".join(["package agent_policy", "", *(f"default {n} := true" for n in RPC_NAMES), "",
                        "policy_data := " + json.dumps({"containers": [{"erofs_layers": pins}]}), ""])
    toml = initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": policy}))
    initdata = initdata_format.encode_annotation(toml)
    secret, other = work / "secret", work / "other-secret"
    secret.write_text(hashlib.sha256(b"workload one").hexdigest())
    other.write_text(hashlib.sha256(b"workload two").hexdigest())
    disk = work / "pv.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 48 << 20)
    logs = work / "logs-pv"
    logs.mkdir()

    def pod(n: int) -> tuple[str, Any]:
        cfg = _sandbox_config(pb, f"pv-pod-{n}", logs, initdata)
        cfg.linux.security_context.privileged = True  # CRI: a privileged container needs a privileged pod
        return client.call("RunPodSandbox", pb.RunPodSandboxRequest(
            config=cfg, runtime_handler="contrast-cc")).pod_sandbox_id, cfg

    def end(sid: str) -> None:
        client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))

    with loop_device(disk) as host_dev:
        sid, sandbox_config = pod(1)
        try:
            cid = client.call("CreateContainer", pb.CreateContainerRequest(
                pod_sandbox_id=sid, config=_secure_pv_container(pb, "init-1", host_dev, secret),
                sandbox_config=sandbox_config)).container_id
            t0 = time.monotonic()
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            done = _wait_exec(client, cid, ["test", "-f", "/done"])
            first_open = time.monotonic() - t0
            assert done.exit_code == 0, (logs / "init-1.log").read_text()[-3000:]
            wrote = client.call("ExecSync", pb.ExecSyncRequest(
                container_id=cid, cmd=["sh", "-c", "echo pv-plaintext-marker > /state/data"], timeout=60))
            assert wrote.exit_code == 0, wrote
            client.call("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=30))
            st = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
            assert st.exit_code == 0, (logs / "init-1.log").read_text()[-3000:]
        finally:
            end(sid)
        with open(host_dev, "rb") as f:
            raw = f.read()
        assert raw[:6] == b"LUKS\xba\xbe" and b"pv-plaintext-marker" not in raw
        before = hashlib.sha256(raw).hexdigest()

        sid, sandbox_config = pod(2)
        try:
            bad = client.call("CreateContainer", pb.CreateContainerRequest(
                pod_sandbox_id=sid, config=_secure_pv_container(pb, "init-other", host_dev, other),
                sandbox_config=sandbox_config)).container_id
            client.call("StartContainer", pb.StartContainerRequest(container_id=bad))
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                st = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=bad)).status
                if st.state == pb.CONTAINER_EXITED:
                    break
                time.sleep(1)
            assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 1), st
            refused = (logs / "init-other.log").read_text()
            assert "Volume key does not match" in refused or "does not open" in refused, refused
            client.call("RemoveContainer", pb.RemoveContainerRequest(container_id=bad))
            with open(host_dev, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == before  # never reformatted
            cid = client.call("CreateContainer", pb.CreateContainerRequest(
                pod_sandbox_id=sid, config=_secure_pv_container(pb, "init-2", host_dev, secret),
                sandbox_config=sandbox_config)).container_id
            t0 = time.monotonic()
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            assert _wait_exec(client, cid, ["test", "-f", "/done"]).exit_code == 0
            reopen = time.monotonic() - t0
            got = client.call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=["cat", "/state/data"],
                                                             timeout=60))
            assert got.stdout == b"pv-plaintext-marker\n", (got, (logs / "init-2.log").read_text()[-2000:])
            print(f"secure-pv: start to /done, first use (format): {first_open:.1f}s, reopen: {reopen:.1f}s")
        finally:
            end(sid)


def test_a_host_that_swaps_the_secure_pv_for_a_plaintext_disk_never_shows_its_files(
    cri: tuple[Containerd, CriClient, str, Path],
) -> None:
    """The host hands the pod a plaintext ext4 disk with a file planted in it instead of the LUKS2
    volume: the initializer finds no LUKS header, formats the disk with the workload's key (first
    use), and the pod sees an empty volume, never the host's file."""
    import hashlib
    import os

    ctd, client, _, work = cri
    pb = client.pb
    ns = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
    out = ns.ctr("image", "ls")
    listed = out.stdout.splitlines()
    digest = next((line.split()[2] for line in listed if line.startswith(INITIALIZER_IMAGE + " ")),
                  None) or _initializer_image(ctd, work)
    busybox = next(line.split()[2] for line in out.stdout.splitlines() if line.startswith(IMAGE_NAME + " "))
    pins = _layer_pins(ns, busybox, work / "layers") + _layer_pins(ns, digest, work / "layers")
    from tools.vm.pod import RPC_NAMES

    policy = "\n".join(["package agent_policy", "", *(f"default {n} := true" for n in RPC_NAMES), "",
                        "policy_data := " + json.dumps({"containers": [{"erofs_layers": pins}]}), ""])
    initdata = initdata_format.encode_annotation(
        initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": policy})))
    secret = work / "swap-secret"
    secret.write_text(hashlib.sha256(b"workload swap").hexdigest())
    planted = work / "planted"
    planted.mkdir()
    (planted / "host-planted.txt").write_text("host says hello\n")
    disk = work / "plain.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 48 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(planted), str(disk)], check=True, timeout=60)
    logs = work / "logs-swap"
    logs.mkdir()
    with loop_device(disk) as host_dev:
        cfg = _sandbox_config(pb, "swap-pod", logs, initdata)
        cfg.linux.security_context.privileged = True
        sid = client.call("RunPodSandbox", pb.RunPodSandboxRequest(
            config=cfg, runtime_handler="contrast-cc")).pod_sandbox_id
        try:
            cid = client.call("CreateContainer", pb.CreateContainerRequest(
                pod_sandbox_id=sid, config=_secure_pv_container(pb, "init-swap", host_dev, secret),
                sandbox_config=cfg)).container_id
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            done = _wait_exec(client, cid, ["test", "-f", "/done"])
            assert done.exit_code == 0, (logs / "init-swap.log").read_text()[-3000:]
            listing = client.call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=["ls", "-a", "/state"],
                                                                 timeout=60))
            assert listing.exit_code == 0 and b"host-planted" not in listing.stdout, listing
            assert "formatted=True" in (logs / "init-swap.log").read_text()
        finally:
            client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
            client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
        with open(host_dev, "rb") as f:
            assert f.read(6) == b"LUKS\xba\xbe"
