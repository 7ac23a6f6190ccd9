"""Contrast's secure-pv as Kubernetes runs it, through tools.kube's kubelet, Debian's containerd and
our shim: the initializer is a native sidecar (init container, ``restartPolicy: Always``,
privileged, the block PVC at /dev/csi0) that opens the LUKS2 volume and mounts it at ``/state`` of a
``medium: Memory`` emptyDir with ``mountPropagation: Bidirectional``, then stays running; the app
container mounts the same emptyDir with ``HostToContainer`` and sees the decrypted filesystem.

Every hop carries the propagation: the kubelet's root directory is an rshared mount (containerd's
CRI refuses Bidirectional / HostToContainer otherwise) and the CRI mount's propagation becomes the
bind's ``rshared`` / ``rslave`` and the spec's ``rootfsPropagation``; the shim sends them unchanged;
the guest's tmpfs behind the emptyDir is a shared mount of its own (guest.storage.make_pod_shared),
crun makes the per-container binds peers / slaves of it.

Two pod VMs: pod 1 starts its app *before* the sidecar has mounted (the mount must propagate into
a running container), the app writes and reads back a file; the host's disk holds no plaintext;
pod 2 (another VM) runs in Kubernetes' order and its app reads the file. In pod 1 the host also
sends a container whose /state lost its propagation, one whose /state is a directory of the host's
(a hostPath it filled) and one whose /state is another emptyDir of the pod: what they see is
asserted here; the generated policy refuses these requests
(tests/genpolicy/test_genpolicy_propagation.py)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.runtime.volumes_support import (
    INITIALIZER_IMAGE,
    SECRET_PATH,
    cri_node,
    initializer_initdata,
    loop_device,
    wait_exec,
)
from tools.kube import Kubelet, PodPlan, RunningPod, load_objects, pod_templates
from tools.vm.containerd import IMAGE_NAME, Containerd
from tools.vm.cri.client import CriClient

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.encrypted_storage]

MARKER = "secure-pv-app-marker-5c1d"
# The app waits (bounded) until /state is the decrypted ext4, then writes and reads back.
APP_SCRIPT = (
    "i=0; until grep -q ' /state ext4 ' /proc/mounts; do "
    "i=$((i+1)); [ $i -gt 300 ] && exit 7; sleep 1; done; "
    f"echo {MARKER} > /state/app.txt && sync && echo \"read back $(cat /state/app.txt)\"; "
    "grep ' /state ' /proc/mounts; sleep 600"
)


def _pod(name: str, initdata: str, secret: Path, app_script: str, extra: list[dict[str, Any]] | None = None,
         extra_volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from attestation import initdata as initdata_format

    sidecar = {
        "name": "contrast-initializer",
        "image": INITIALIZER_IMAGE,
        "imagePullPolicy": "Never",
        "restartPolicy": "Always",
        "command": ["python3", "-m", "initializer", "cryptsetup", "-d", "/dev/csi0", "-m", "/state",
                    "--secret-file", SECRET_PATH, "--done-file", "/done"],
        "securityContext": {"privileged": True},
        "volumeDevices": [{"name": "disk", "devicePath": "/dev/csi0"}],
        "volumeMounts": [
            {"name": "state", "mountPath": "/state", "mountPropagation": "Bidirectional"},
            {"name": "secret", "mountPath": SECRET_PATH, "readOnly": True},
        ],
        "startupProbe": {"exec": {"command": ["test", "-f", "/done"]}, "periodSeconds": 2,
                         "failureThreshold": 120},
    }
    app = {
        "name": "app",
        "image": IMAGE_NAME,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", app_script],
        "volumeMounts": [{"name": "state", "mountPath": "/state", "mountPropagation": "HostToContainer"}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {initdata_format.ANNOTATION: initdata}},
        "spec": {
            "runtimeClassName": "contrast-cc",
            "terminationGracePeriodSeconds": 30,
            "initContainers": [sidecar],
            "containers": [app, *(extra or [])],
            "volumes": [
                {"name": "disk", "persistentVolumeClaim": {"claimName": "pv"}},
                {"name": "state", "emptyDir": {"medium": "Memory"}},
                {"name": "secret", "hostPath": {"path": str(secret), "type": "File"}},
                *(extra_volumes or []),
            ],
        },
    }


def _plan(work: Path, doc: dict[str, Any]) -> PodPlan:
    path = work / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    (plan,) = pod_templates(load_objects([path]))
    return plan


def _wait_log(pod: RunningPod, container: str, needle: str, within: float = 240) -> str:
    deadline = time.monotonic() + within
    while True:
        text = pod.logs(container)
        if needle in text or time.monotonic() > deadline:
            return text
        if pod.status(container).state == pod.kubelet.pb.CONTAINER_EXITED:
            return pod.logs(container) + f"\n[exited {pod.status(container).exit_code}]"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[tuple[Containerd, CriClient, str, Path]]:
    with cri_node(tmp_path_factory, request, "secure-pv-sidecar") as n:
        yield n


def test_the_sidecars_secure_pv_mount_reaches_the_app_container_and_survives_the_pod(
    node: tuple[Containerd, CriClient, str, Path],
) -> None:
    ctd, client, _, work = node
    initdata = initializer_initdata(ctd, work)
    secret = work / "secret"
    secret.write_text(hashlib.sha256(b"secure-pv sidecar workload").hexdigest())
    secret.chmod(0o600)
    disk = work / "pv.raw"
    disk.write_bytes(b"")
    os.truncate(disk, 48 << 20)
    root = work / "kubelet"
    with loop_device(disk) as host_dev:
        kubelet = Kubelet(client, root=root, host_network=True, block_devices={"pv": host_dev},
                          container_start_timeout=600)
        try:
            _pod_one(kubelet, work, initdata, secret)
            with open(host_dev, "rb") as f:
                raw = f.read()
            assert raw[:6] == b"LUKS\xba\xbe", raw[:8]
            assert MARKER.encode() not in raw and b"host-planted" not in raw
            _pod_two(kubelet, work, initdata, secret)
        finally:
            kubelet.close()
    # the kubelet's bind mount of its root directory is gone again
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert str(root) not in points


def _pod_one(kubelet: Kubelet, work: Path, initdata: str, secret: Path) -> None:
    """Apps first (created and started before the sidecar has mounted), then the sidecar."""
    lost = {  # the host dropped the propagation: containerd's PRIVATE, the bind rprivate
        "name": "lost",
        "image": IMAGE_NAME,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "sleep 600"],
        "volumeMounts": [{"name": "state", "mountPath": "/state"}],
    }
    copied = {  # the host's own directory as /state
        "name": "copied",
        "image": IMAGE_NAME,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "sleep 600"],
        "volumeMounts": [{"name": "hostdir", "mountPath": "/state", "mountPropagation": "HostToContainer"}],
    }
    other = {  # another emptyDir of the pod as /state
        "name": "other",
        "image": IMAGE_NAME,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", "sleep 600"],
        "volumeMounts": [{"name": "scratch", "mountPath": "/state", "mountPropagation": "HostToContainer"}],
    }
    # under the kubelet's root: HostToContainer needs a shared (or slave) host mount
    planted = kubelet.root / "planted"
    planted.mkdir(parents=True, exist_ok=True)
    (planted / "host-planted.txt").write_text("host says hello\n")
    doc = _pod("pv-sidecar-1", initdata, secret, APP_SCRIPT, [lost, copied, other],
               [{"name": "hostdir", "hostPath": {"path": str(planted), "type": "Directory"}},
                {"name": "scratch", "emptyDir": {}}])
    plan = _plan(work, doc)
    t0 = time.monotonic()
    pod, _ = kubelet.start_sandbox(plan)
    sandbox_s = time.monotonic() - t0
    try:
        sidecar = plan.spec["initContainers"][0]
        kubelet.create_container(pod, sidecar, "spec.initContainers[0]", start=False)
        for i, c in enumerate(plan.spec["containers"]):
            kubelet.create_container(pod, c, f"spec.containers[{i}]")
        t1 = time.monotonic()
        client = kubelet.cri
        client.call("StartContainer", kubelet.pb.StartContainerRequest(
            container_id=pod.container_ids["contrast-initializer"]), timeout=600)
        done = wait_exec(client, pod.container_ids["contrast-initializer"], ["test", "-f", "/done"], 300)
        opened_s = time.monotonic() - t1
        assert done.exit_code == 0, pod.logs("contrast-initializer")[-3000:]
        log = _wait_log(pod, "app", " /state ext4 ")  # the script's last line, after "read back"
        propagated_s = time.monotonic() - t1
        # The app started before the mount existed: it reached the running container (rslave).
        assert f"read back {MARKER}" in log, log
        assert " /state ext4 " in log and "/dev/mapper/" in log, log
        # ... and the sidecar sees the app's write: one filesystem
        code, out, _ = pod.exec("contrast-initializer", ["cat", "/state/app.txt"])
        assert (code, out) == (0, f"{MARKER}\n".encode())
        # The host dropped the propagation: that container keeps the guest's empty tmpfs, never
        # the volume (the generated policy refuses this request: the bind must be rslave).
        code, out, _ = pod.exec("lost", ["sh", "-c", "grep ' /state ' /proc/mounts; ls -A /state"])
        assert code == 0 and b" /state tmpfs " in out and b"app.txt" not in out and b"ext4" not in out, out
        # The host's directory as /state: the guest cannot tell a host directory copied in from a
        # volume; the container sees the host's file (the generated policy refuses this source).
        code, out, _ = pod.exec("copied", ["ls", "-A", "/state"])
        assert code == 0 and b"host-planted.txt" in out and b"app.txt" not in out, out
        # Another emptyDir as /state (the node's block-encrypted mode: a fresh encrypted disk of the
        # pod): an empty filesystem, never the secure-pv's files (refused by the policy too).
        code, out, _ = pod.exec("other", ["ls", "-A", "/state"])
        assert code == 0 and b"app.txt" not in out and b"host-planted" not in out, out
        print(f"secure-pv sidecar, pod 1: sandbox {sandbox_s:.1f}s, sidecar start to /done (format) "
              f"{opened_s:.1f}s, the app saw the volume {propagated_s:.1f}s after the sidecar's start")
        # kubelet's order: apps first, the sidecar last; on SIGTERM it unmounts and closes the volume
        pb = kubelet.pb
        for name in ("other", "copied", "lost", "app", "contrast-initializer"):
            client.call("StopContainer", pb.StopContainerRequest(container_id=pod.container_ids[name],
                                                                 timeout=30), timeout=120)
        st = pod.status("contrast-initializer")
        assert st.exit_code == 0, pod.logs("contrast-initializer")[-3000:]
        assert "event=secure_pv_closed" in pod.logs("contrast-initializer")
    finally:
        pod.stop()


def _pod_two(kubelet: Kubelet, work: Path, initdata: str, secret: Path) -> None:
    """Kubernetes' order (sidecar started, startup probe, then the app): the app reads pod 1's file."""
    doc = _pod("pv-sidecar-2", initdata, secret,
               "cat /state/app.txt && grep ' /state ' /proc/mounts; sleep 600")
    t0 = time.monotonic()
    pod = kubelet.run_pod(_plan(work, doc))
    try:
        log = _wait_log(pod, "app", " /state ext4 ")  # printed after the marker
        started_s = time.monotonic() - t0
        assert MARKER in log and " /state ext4 " in log, (log, pod.logs("contrast-initializer")[-2000:])
        assert "formatted=False" in pod.logs("contrast-initializer")
        print(f"secure-pv sidecar, pod 2 (new VM, reopen): pod start to the app's read {started_s:.1f}s")
    finally:
        pod.stop()
