"""Memory emptyDirs as Kata's runtime sends them: tools.kube lays a ``medium: Memory`` emptyDir out as
kubelet does (a tmpfs under ``…/volumes/kubernetes.io~empty-dir/<name>``), and the shim turns a bind
mount of it into an ``ephemeral`` storage at /run/kata-containers/sandbox/ephemeral/<name> (nothing
copied), while a plain emptyDir with the same path shape is copied in as before. Pod deletion unmounts
the tmpfs."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from guest.protocols import oci_pb2
from runtime.share import GUEST_EPHEMERAL, share_bind_mounts
from tools.kube import load_objects, pod_templates
from tools.kube.volumes import PodVolumes

pytestmark = pytest.mark.root

POD = """apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, image: i}]
  volumes:
  - {name: contrast-secrets, emptyDir: {medium: Memory}}
  - {name: scratch, emptyDir: {}}
"""


def test_memory_emptydir_becomes_ephemeral_storage(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (tmpfs mount)")
    yaml_path = tmp_path / "pod.yaml"
    yaml_path.write_text(POD)
    (plan,) = pod_templates(load_objects([yaml_path]))
    volumes = PodVolumes(tmp_path / "root", plan)
    volumes.setup("10.0.0.2", "127.0.0.1")
    memory, scratch = volumes.path("contrast-secrets", "x"), volumes.path("scratch", "x")
    try:
        assert f" {memory} tmpfs " in Path("/proc/self/mounts").read_text()
        (scratch / "f").write_text("copied")
        spec = oci_pb2.Spec()
        spec.Mounts.add(destination="/contrast", type="bind", source=str(memory), options=["rbind", "rw"])
        spec.Mounts.add(destination="/scratch", type="bind", source=str(scratch), options=["rbind", "rw"])
        calls: list[Any] = []

        async def call(method: str, request: Any, reply: Any) -> None:
            calls.append((method, request.path))

        storages = asyncio.run(share_bind_mounts(call, "c" * 64, spec))
        assert [(s.driver, s.source, s.fstype, s.mount_point, list(s.options)) for s in storages] == [
            ("ephemeral", "tmpfs", "tmpfs", f"{GUEST_EPHEMERAL}/contrast-secrets", [])]
        assert spec.Mounts[0].source == f"{GUEST_EPHEMERAL}/contrast-secrets"
        assert spec.Mounts[1].source.startswith("/run/kata-containers/shared/containers/")
        assert all(not path.startswith(GUEST_EPHEMERAL) for _, path in calls)  # the tmpfs is not copied
        assert any(path.endswith("/f") for _, path in calls)
    finally:
        subprocess.run(["umount", "-l", str(memory)], capture_output=True, check=False)

