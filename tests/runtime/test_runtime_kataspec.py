"""Kata's rewriting of containerd's OCI spec (runtime/kataspec.py) on the specs containerd 1.6's CRI
plugin writes: a sandbox with its duplicated /dev/shm and netns path, a container sharing the pod's
process namespace, the fields Kata drops; a host-supplied policy annotation never reaches the guest."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.kataspec import BUNDLE_PATH, CONTAINER_TYPE_KEY, NETNS_ANNOTATION, annotate, kata_spec
from runtime.spec import spec_from_json

SANDBOX = {
    "ociVersion": "1.0.2-dev",
    "process": {"args": ["/pause"], "cwd": "/", "user": {"uid": 65535, "gid": 65535}},
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "size=65536k"]},
        {
            "destination": "/dev/shm",
            "type": "bind",
            "source": "/run/containerd/sandboxes/x/shm",
            "options": ["rbind"],
        },
        {
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": "/tmp/resolv.conf",
            "options": ["rbind", "ro"],
        },
    ],
    "hooks": {"prestart": [{"path": "/usr/bin/hook"}]},
    "annotations": {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.katacontainers.config.hypervisor.cc_init_data": "H4sI...",
        "io.katacontainers.config.agent.policy": "cGFja2FnZQ==",
    },
    "linux": {
        "cgroupsPath": "/kubepods/besteffort/podX/abc",
        "resources": {
            "cpu": {"shares": 2, "cpus": "0-3", "mems": "0"},
            "pids": {"limit": 10},
            "devices": [{"allow": False, "access": "rwm"}],
        },
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "network", "path": "/var/run/netns/cni-0f6c5d7e-1111-2222-3333-444455556666"},
        ],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
        "maskedPaths": ["/proc/kcore"],
    },
}


def test_sandbox_spec_as_kata_sends_it() -> None:
    spec = spec_from_json(json.dumps(SANDBOX).encode())
    annotate(spec, "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc", sandbox=True)
    out = kata_spec(spec, "abc")
    s = out.spec
    assert dict(s.Annotations) == {
        "io.kubernetes.cri.container-type": "sandbox",
        BUNDLE_PATH: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc",
        CONTAINER_TYPE_KEY: "pod_sandbox",
        NETNS_ANNOTATION: "/var/run/netns/cni-0f6c5d7e-1111-2222-3333-444455556666",
    }
    shm = [m for m in s.Mounts if m.destination == "/dev/shm"]
    assert [(m.type, m.source, list(m.options)) for m in shm] == [
        ("bind", "/run/kata-containers/sandbox/shm", ["rbind"])
    ]
    assert [m.destination for m in s.Mounts] == ["/proc", "/dev/shm", "/etc/resolv.conf"]
    assert s.Root.Path == "/run/kata-containers/abc/rootfs" and s.Root.Readonly
    assert [(n.Type, n.Path) for n in s.Linux.Namespaces] == [("ipc", ""), ("uts", ""), ("mount", "")]
    assert out.sandbox_pidns is False
    assert not s.HasField("Hooks") and not s.Linux.HasField("Seccomp")
    assert not s.Linux.Resources.HasField("Pids") and len(s.Linux.Resources.Devices) == 0
    assert (s.Linux.Resources.CPU.Shares, s.Linux.Resources.CPU.Cpus, s.Linux.Resources.CPU.Mems) == (
        2,
        "",
        "",
    )
    assert s.Linux.CgroupsPath == "/kubepods/besteffort/podX/abc"  # Kata sends kubelet's value
    assert list(s.Linux.MaskedPaths) == ["/proc/kcore"]


def test_container_sharing_the_pod_pid_namespace() -> None:
    doc = json.loads(json.dumps(SANDBOX))
    doc["annotations"] = {"io.kubernetes.cri.container-type": "container"}
    doc["linux"]["namespaces"][0] = {"type": "pid", "path": "/proc/42/ns/pid"}
    doc["linux"]["namespaces"].append({"type": "cgroup"})
    spec = spec_from_json(json.dumps(doc).encode())
    annotate(spec, "/b", sandbox=False)
    out = kata_spec(spec, "c1")
    assert out.sandbox_pidns is True
    assert NETNS_ANNOTATION not in out.spec.Annotations  # only the sandbox carries it
    assert out.spec.Annotations[CONTAINER_TYPE_KEY] == "pod_container"
    assert [n.Type for n in out.spec.Linux.Namespaces] == ["ipc", "uts", "mount"]


def test_placeholder_netns_is_not_announced() -> None:
    doc = json.loads(json.dumps(SANDBOX))
    doc["linux"]["namespaces"][-1] = {"type": "network", "path": "/proc/0/ns/net"}
    spec = spec_from_json(json.dumps(doc).encode())
    annotate(spec, "/b", sandbox=True)
    assert NETNS_ANNOTATION not in spec.Annotations


def test_exec_process_carries_only_what_kata_sends() -> None:
    from google.protobuf import json_format

    from guest.protocols import oci_pb2
    from runtime.kataspec import kata_exec_process

    full = json_format.ParseDict(
        {
            "Terminal": True,
            "User": {"UID": 1000, "GID": 1000, "AdditionalGids": [5], "Username": "x"},
            "Args": ["cat", "/tmp/ready"],
            "Env": ["A=1"],
            "Cwd": "/",
            "Capabilities": {"Bounding": ["CAP_SYS_ADMIN"]},
            "NoNewPrivileges": True,
            "OOMScoreAdj": 5,
            "ApparmorProfile": "cri-containerd.apparmor.d",
        },
        oci_pb2.Process(),
    )
    out = kata_exec_process(full)
    assert json_format.MessageToDict(out) == {
        "Terminal": True,
        "User": {"UID": 1000, "GID": 1000, "AdditionalGids": [5]},
        "Args": ["cat", "/tmp/ready"],
        "Env": ["A=1"],
        "Cwd": "/",
    }


def test_dns_lines_as_kata_splits_them() -> None:
    import pytest

    from runtime.errors import InvalidInputError
    from runtime.kataspec import dns_lines

    text = (
        b"search default.svc.cluster.local svc.cluster.local cluster.local\n"
        b"nameserver 10.96.0.10\noptions ndots:5\n"
    )
    assert dns_lines(text, "/r") == [
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
        "",
    ]
    for hostile in (b"nameserver 1.1.1.1\n" * 100, b"x" * 2000, b"a\0b", b"\xff\xfe"):
        with pytest.raises(InvalidInputError, match=r"sandbox resolv\.conf"):
            dns_lines(hostile, "/r")


def test_sandbox_dns_refuses_a_fifo_or_device_without_blocking(tmp_path: Path) -> None:
    """A hostile host points the resolv.conf bind at a FIFO (open would block the shim's loop
    forever) or a device: a clear error, promptly."""
    import concurrent.futures
    import os

    import pytest

    from guest.protocols import oci_pb2
    from runtime.errors import InvalidInputError
    from runtime.service import TaskService

    fifo = tmp_path / "resolv.conf"
    os.mkfifo(fifo)
    for source in (str(fifo), "/dev/zero"):
        spec = oci_pb2.Spec()
        spec.Mounts.add(destination="/etc/resolv.conf", type="bind", source=source)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        future = pool.submit(TaskService._sandbox_dns, spec)
        try:
            with pytest.raises(InvalidInputError, match=r"sandbox resolv\.conf.*regular file"):
                future.result(timeout=10)
        finally:
            if not future.done():  # unblock the stuck open() so the test ends
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pool.shutdown(wait=True)
    good = tmp_path / "good.conf"
    good.write_bytes(b"nameserver 10.96.0.10\n")
    spec = oci_pb2.Spec()
    spec.Mounts.add(destination="/etc/resolv.conf", type="bind", source=str(good))
    assert TaskService._sandbox_dns(spec) == ["nameserver 10.96.0.10", ""]
