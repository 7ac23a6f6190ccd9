"""Block volumes of CRI pods through Debian's containerd and our shim: disks hotplugged into the
running pod VM (CRI ``devices`` → the bundle's ``linux.devices`` → QMP blockdev-add/device_add
onto a PCIe root port → the agent's ``Device{type: blk, vm_path: <PCI path>}``).

The host side of each volume is a raw disk file behind a loop device (containerd accepts only device
nodes as a CRI device's host path). Boots are bounded: one pod VM per test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.volumes_support import (
    SECOND_IMAGE,
    cri_node,
    initializer_initdata,
    loop_device,
    secure_pv_container,
    wait_exec,
)
from tests.runtime.volumes_support import (
    sandbox_config as _sandbox_config,
)
from tools.vm.containerd import IMAGE_NAME, Containerd
from tools.vm.cri.client import CriClient

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.encrypted_storage]


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[tuple[Containerd, CriClient, str, Path]]:
    with cri_node(tmp_path_factory, request, "volumes") as node:
        yield node


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
    initdata = initializer_initdata(ctd, work)
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
                pod_sandbox_id=sid, config=secure_pv_container(pb, "init-1", host_dev, secret),
                sandbox_config=sandbox_config)).container_id
            t0 = time.monotonic()
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            done = wait_exec(client, cid, ["test", "-f", "/done"])
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
                pod_sandbox_id=sid, config=secure_pv_container(pb, "init-other", host_dev, other),
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
                pod_sandbox_id=sid, config=secure_pv_container(pb, "init-2", host_dev, secret),
                sandbox_config=sandbox_config)).container_id
            t0 = time.monotonic()
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            assert wait_exec(client, cid, ["test", "-f", "/done"]).exit_code == 0
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
    initdata = initializer_initdata(ctd, work)
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
                pod_sandbox_id=sid, config=secure_pv_container(pb, "init-swap", host_dev, secret),
                sandbox_config=cfg)).container_id
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            done = wait_exec(client, cid, ["test", "-f", "/done"])
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
