"""Block-encrypted emptyDirs through Debian's containerd, our shim and the pod VM (Kata's default for
CoCo, genpolicy's ``emptydir_type: block-encrypted``, Kata's settings and rules).

A Kubernetes pod (tools.kube) with a disk emptyDir shared by two containers and a generated policy:
the shim makes a sparse ``disk.img`` in the kubelet's emptyDir directory, as large as its filesystem,
hotplugged into the running VM; the guest formats it as LUKS2 with authenticated encryption under a
key born there and both containers see one filesystem (the pod's fsGroup owning it). The host's file
holds ciphertext only and stays sparse. Then the host turns the emptyDir back into plain files (the
shim's configuration says ``shared-fs``): the same pod is refused by the policy.

Two pod VMs."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.test_runtime_generated import (
    BLOCKED,
    Node,
    _denied_input,
    _plans,
    generated_node,
)
from tools.kube import PodFailedError

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.encrypted_storage]

MARKER = "emptydir-plaintext-marker-4f1c"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Node]:
    # Kata's emptydir_type (block-encrypted) and the shim's default; output readable, as in Contrast's
    # settings, so the reader's probe command shows what it read.
    readable = {"op": "replace", "path": "/request_defaults/ReadStreamRequest", "value": True}
    with generated_node(tmp_path_factory.mktemp("emptydir"), request, emptydir_mode="block-encrypted",
                        extra_ops=[readable]) as n:
        yield n


SCRATCH = """
apiVersion: v1
kind: Pod
metadata: {{name: scratch}}
spec:
  runtimeClassName: contrast-cc
  securityContext: {{fsGroup: 2000}}
  containers:
  - name: writer
    image: {image}
    command: [sh, -c, "echo {marker} > /data/marker && sync && sleep 600"]
    volumeMounts: [{{name: scratch, mountPath: /data}}]
  - name: reader
    image: {image}
    command: [sh, -c, "sleep 600"]
    volumeMounts: [{{name: scratch, mountPath: /data, readOnly: true}}]
    startupProbe:
      exec: {{command: [sh, -c, "cat /data/marker && stat -c '%u %g %a' /data/marker /data"]}}
      periodSeconds: 2
      timeoutSeconds: 60
      failureThreshold: 60
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
"""
PROBE = ["sh", "-c", "cat /data/marker && stat -c '%u %g %a' /data/marker /data"]


def _data_contains(path: Path, needle: bytes) -> tuple[bool, int]:
    """Whether the allocated extents of the sparse file ``path`` hold ``needle``; the bytes read."""
    found, read = False, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: no data after offset
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            while start < stop:
                chunk = os.pread(fd, min(8 << 20, stop - start) + len(needle), start)
                read += len(chunk)
                found = found or needle in chunk
                start += 8 << 20
            offset = stop
    finally:
        os.close(fd)
    return found, read


def test_an_emptydir_is_an_encrypted_disk_of_the_pod_vm_shared_by_its_containers(node: Node) -> None:
    path, explained = node.generate("scratch", SCRATCH.format(image=node.image, marker=MARKER))
    assert "/data" in explained
    (plan,) = _plans(path)
    t0 = time.monotonic()
    pod = node.run(plan)
    try:
        pod.wait_for_probes(300)
        started = time.monotonic() - t0
        code, out, err = pod.exec("reader", PROBE)
        assert code == 0, err
        lines = out.decode().splitlines()
        # The reader sees what the writer wrote: one filesystem; the file is in the pod's fsGroup (the
        # volume's root is setgid to it, kubelet's 0777 plus the group), not the writer's group 0.
        assert lines[0] == MARKER, lines
        assert lines[1] == "0 2000 644" and lines[2] == "0 2000 2777", lines
        scratch = node.kubelet.root / "pods" / plan.uid / "volumes" / "kubernetes.io~empty-dir" / "scratch"
        disk = scratch / "disk.img"
        st = os.stat(disk)
        vfs = os.statvfs(scratch)
        assert st.st_size == vfs.f_blocks * vfs.f_frsize // 4096 * 4096  # the filesystem's capacity
        with open(disk, "rb") as f:
            head = f.read(16384)
        assert head[:6] == b"LUKS\xba\xbe" and head[6:8] == b"\x00\x02", head[:8]
        header = head[4096:].split(b"\0", 1)[0].decode().replace(" ", "")
        assert '"integrity":{"type":"hmac(sha256)"' in header, header[:400]
        # The writer synced: its data is on the host's disk file, as ciphertext only.
        found, allocated = _data_contains(disk, MARKER.encode())
        assert not found
        assert st.st_blocks * 512 < 512 << 20, f"{st.st_blocks * 512} bytes allocated: the disk was wiped?"
        print(f"pod with an encrypted emptyDir of {st.st_size >> 30} GiB started in {started:.1f}s; "
              f"host file: {st.st_blocks * 512 >> 20} MiB allocated, {allocated >> 20} MiB read back")
        # The sandbox ends: the shim removes the disk file (kubelet would remove the directory later).
        pb = node.kubelet.pb
        node.kubelet.cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id),
                              timeout=300)
        node.kubelet.cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id),
                              timeout=300)
        assert scratch.is_dir() and not disk.exists()
    finally:
        with contextlib.suppress(PodFailedError):  # (after the removal above: already gone)
            pod.stop()


def test_a_host_that_turns_the_emptydir_back_into_plain_files_is_refused_by_the_policy(node: Node) -> None:
    """The same pod and policy while the shim's configuration says ``shared-fs``: the emptyDir would be
    the host's files copied in (readable and writable by the host); the policy pins the encrypted
    block storage, so the first container using it is refused."""
    path = node.work / "scratch.yaml"
    if not path.exists():
        path, _ = node.generate("scratch", SCRATCH.format(image=node.image, marker=MARKER))
    config = node.work / "rt.toml"  # the file containerd's runtime options name (host_erofs_config)
    saved = node.work / "rt.saved"
    shutil.copyfile(config, saved)
    text = config.read_text()
    assert 'emptydir_mode = "block-encrypted"' in text
    config.write_text(text.replace('emptydir_mode = "block-encrypted"', 'emptydir_mode = "shared-fs"'))
    try:
        (plan,) = _plans(path)
        with pytest.raises(PodFailedError) as refused:
            node.kubelet.run_pod(plan)
        assert BLOCKED in refused.value.detail, refused.value
    finally:
        shutil.copyfile(saved, config)
    # What the policy refused: the emptyDir as the host's files copied in, no encrypted block storage.
    denied = _denied_input(refused.value.detail)
    assert [s["driver"] for s in denied["storages"]] == ["erofs.multi-layer"], denied["storages"]
    (data,) = [m for m in denied["OCI"]["Mounts"] if m["destination"] == "/data"]
    assert data["source"].startswith("/run/kata-containers/shared/containers/"), data
