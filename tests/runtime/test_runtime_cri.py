"""A pod through the CRI API (what kubelet calls) of Debian's containerd, with our shim as the runtime
handler ``contrast-cc``: RunPodSandbox boots the pod VM (initdata from the pod annotation, passed
through by containerd), two containers share it, their output lands in the CRI log files, ExecSync
runs in the VM, ContainerStatus reports the exit codes, StopPodSandbox/RemovePodSandbox end it all.

Host-network pods (no CNI here); the workload uses the sandbox image, whose layers the VM is booted
with (host-EROFS)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

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

pytestmark = [pytest.mark.root, pytest.mark.vm]

EXEC_ALLOWED = "echo exec; exit 2"


@pytest.fixture(scope="module")
def cri(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Containerd, CriClient, str, Path]]:
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    reason = containerd_missing() or qemu_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("cri")
    config = host_erofs_config(pod_image_dir(request.config), work)
    with running_containerd(cri_runtime_config=config) as ctd:
        archive = ctd.base / "image.tar"
        digest = busybox_image_archive(archive)
        ns_ctd = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        imported = ns_ctd.ctr("image", "import", str(archive))
        assert imported.returncode == 0, imported.stderr
        policy = pinned_policy(ns_ctd, digest, work / "layers", execs=[["sh", "-c", EXEC_ALLOWED]])
        toml = initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": policy}))
        client = CriClient(ctd.socket)
        try:
            client.wait_ready()
            yield ctd, client, initdata_format.encode_annotation(toml), work
        finally:
            client.close()


def test_a_pod_through_the_cri(cri: tuple[Containerd, CriClient, str, Path]) -> None:
    ctd, client, initdata_annotation, work = cri
    pb = client.pb
    logs = work / "logs"
    logs.mkdir()
    sandbox_config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="busybox-pod", uid="uid-1", namespace="default", attempt=0),
        hostname="busybox-pod",
        log_directory=str(logs),
        annotations={initdata_format.ANNOTATION: initdata_annotation},
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE)
            )
        ),
    )
    t0 = time.monotonic()
    sid = client.call(
        "RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config, runtime_handler="contrast-cc")
    ).pod_sandbox_id
    try:
        ids = []
        for name, script in (("one", "echo hi from one; exit 7"), ("two", "echo two; sleep 600")):
            cfg = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=name),
                image=pb.ImageSpec(image=IMAGE_NAME),
                command=["sh", "-c", script],
                log_path=f"{name}.log",
            )
            cid = client.call(
                "CreateContainer",
                pb.CreateContainerRequest(pod_sandbox_id=sid, config=cfg, sandbox_config=sandbox_config),
            ).container_id
            client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
            ids.append(cid)
        first_running = time.monotonic() - t0
        assert len(list(Path(ctd.env["CONTRAST_CC_RUN_DIR"]).glob("*/vm/qemu.pid"))) == 1
        deadline = time.monotonic() + 120
        while True:
            status = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=ids[0])).status
            if status.state == pb.CONTAINER_EXITED or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 7), status
        log = (logs / "one.log").read_text()
        assert "stdout F hi from one" in log, log
        ex = client.call(
            "ExecSync",
            pb.ExecSyncRequest(container_id=ids[1], cmd=["sh", "-c", EXEC_ALLOWED], timeout=60),
        )
        assert (ex.stdout, ex.exit_code) == (b"exec\n", 2), ex
        # An exec the policy refuses: containerd gets the policy's error, and its clean-up (kill, wait,
        # delete of the never-started exec) must not wait for an exit that never comes (containerd
        # gives that clean-up a minute, past this call's deadline).
        with pytest.raises(Exception, match="ExecProcessRequest is blocked by policy"):
            client.call(
                "ExecSync",
                pb.ExecSyncRequest(container_id=ids[1], cmd=["cat", "/etc/passwd"], timeout=60),
                timeout=40,
            )
        running = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=ids[1])).status
        assert running.state == pb.CONTAINER_RUNNING
        print(f"RunPodSandbox to both containers started: {first_running:.1f}s")
    finally:
        client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    rundir = Path(ctd.env["CONTRAST_CC_RUN_DIR"])
    deadline = time.monotonic() + 30
    while shim_processes(rundir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shim_processes(rundir) == []
    assert not rundir.exists() or list(rundir.rglob("*")) == []
