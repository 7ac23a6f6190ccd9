"""config.json from the request's Spec: kata's namespace rewriting and the guest's own limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest.backend.errors import InvalidRequestError
from guest.backend.layout import Layout, check_id
from guest.backend.spec import NamespacePaths, oci_spec
from guest.protocols import oci_pb2

CID = "c" * 64
LAYOUT = Layout()
NS = NamespacePaths(Path("/run/sandbox-ns/ipc"), Path("/run/sandbox-ns/uts"), Path("/proc/42/ns/pid"))


def spec(**kw: object) -> oci_pb2.Spec:
    s = oci_pb2.Spec(Version="1.1.0", Hostname="pod")
    s.Process.Args.extend(["/bin/sh", "-c", "echo hi"])
    s.Process.Env.append("PATH=/bin")
    s.Process.Cwd = "/"
    s.Process.User.UID = 1000
    s.Process.Capabilities.Bounding.append("CAP_CHOWN")
    s.Process.ApparmorProfile = "cri-containerd.apparmor.d"
    s.Root.Path = f"/run/kata-containers/{CID}/rootfs"
    for t in ("ipc", "uts", "mount"):
        s.Linux.Namespaces.add(Type=t)
    s.Linux.CgroupsPath = "kubepods-besteffort-pod1.slice:cri-containerd:" + CID
    s.Linux.Resources.Memory.Limit = 32 << 20
    s.Linux.Resources.CPU.Cpus = "0-1"
    s.Mounts.add(destination="/proc", type="proc", source="proc")
    s.Mounts.add(destination="/etc/hosts", type="bind", options=["rbind", "ro"],
                 source=f"/run/kata-containers/shared/containers/{CID}-0123456789abcdef-hosts")
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_namespaces_rewritten_like_the_agent() -> None:
    out = oci_spec(spec(), layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)
    ns = {n["type"]: n.get("path") for n in out["linux"]["namespaces"]}
    assert ns == {"mount": None, "cgroup": None, "ipc": "/run/sandbox-ns/ipc", "uts": "/run/sandbox-ns/uts",
                  "pid": "/proc/42/ns/pid"}
    assert "network" not in ns
    assert out["linux"]["cgroupsPath"] == f"/kata/{CID}"  # never the host's string
    assert out["linux"]["resources"] == {"memory": {"limit": 32 << 20}}  # cpuset dropped
    assert "apparmorProfile" not in out["process"] and out["process"]["user"] == {"uid": 1000, "gid": 0}
    assert out["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    assert "hostname" not in out  # the shared UTS namespace has it
    # the sandbox container gets its own pid namespace even with a shared one recorded
    pause = oci_spec(spec(), layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=True)
    assert {"type": "pid"} in pause["linux"]["namespaces"]


def test_rootfs_must_be_the_bundle_rootfs() -> None:
    s = spec()
    s.Root.Path = "/"
    with pytest.raises(InvalidRequestError, match=r"OCI\.Root\.Path"):
        oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)


@pytest.mark.parametrize("source", ["/", "/etc", "/run/kata-containers/../../etc",
                                    "/dev/vda", "relative/path",
                                    # another container's rootfs, the shared verity layers, the agent's state
                                    "/run/kata-containers/" + "d" * 64 + "/rootfs",
                                    "/run/kata-containers/sandbox/layers", "/run/kata-containers",
                                    "/run/kata-containers/sandbox/resolv.conf.d",
                                    # the memory emptyDirs' parent itself, a look-alike neighbour
                                    "/run/kata-containers/sandbox/ephemeral",
                                    "/run/kata-containers/sandbox/ephemeralx/v"])
def test_bind_sources_outside_the_agent_trees_are_refused(source: str) -> None:
    s = spec()
    s.Mounts.add(destination="/host", type="bind", source=source, options=["rbind"])
    with pytest.raises(InvalidRequestError, match=r"Mount\.source"):
        oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)


def test_bind_sources_the_agent_provides_are_kept() -> None:
    s = spec()
    sandbox = "/run/kata-containers/sandbox"
    s.Mounts.add(destination="/dev/shm", type="bind", source=f"{sandbox}/shm", options=["rbind"])
    s.Mounts.add(destination="/etc/resolv.conf", type="bind", source=f"{sandbox}/resolv.conf")
    s.Mounts.add(destination="/scratch", type="bind", source=f"/run/kata-containers/{CID}/scratch")
    s.Mounts.add(destination="/contrast", type="bind", source=f"{sandbox}/ephemeral/contrast-secrets",
                 options=["rbind", "rprivate", "rw"])
    out = oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)
    assert [m["source"] for m in out["mounts"][-4:]] == ["/run/kata-containers/sandbox/shm",
                                                          "/run/kata-containers/sandbox/resolv.conf",
                                                          f"/run/kata-containers/{CID}/scratch",
                                                          f"{sandbox}/ephemeral/contrast-secrets"]


def test_unknown_mount_types_seccomp_and_user_namespaces_are_refused() -> None:
    s = spec()
    s.Mounts.add(destination="/x", type="ext4", source="/dev/vdb")
    with pytest.raises(InvalidRequestError, match=r"Mount\.type"):
        oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)
    s = spec()
    s.Linux.Seccomp.DefaultAction = "SCMP_ACT_ALLOW"
    with pytest.raises(InvalidRequestError, match="Seccomp"):
        oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)
    s = spec()
    s.Linux.UIDMappings.add(HostID=0, ContainerID=0, Size=1)
    with pytest.raises(InvalidRequestError, match="UIDMappings"):
        oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)


@pytest.mark.parametrize("cid", ["", "..", "a/b", "-x", "a" * 129, "../etc", "a\0b", "é"])
def test_container_ids_that_could_become_paths_are_refused(cid: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_id("container_id", cid)
    with pytest.raises(InvalidRequestError):
        LAYOUT.bundle(cid)


@pytest.mark.parametrize(("rootfs", "bind"), [("rshared", "rshared"), ("rslave", "rslave"), ("", "rprivate")])
def test_mount_propagation_reaches_crun_as_containerd_wrote_it(rootfs: str, bind: str) -> None:
    """secure-pv: containerd's rootfs propagation and the bind's option of the pod-shared volume."""
    s = spec()
    s.Linux.RootfsPropagation = rootfs
    s.Mounts.add(destination="/state", type="bind", source="/run/kata-containers/sandbox/ephemeral/state",
                 options=["rbind", bind, "rw"])
    out = oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)
    assert out["linux"].get("rootfsPropagation", "") == rootfs
    assert out["mounts"][-1]["options"] == ["rbind", bind, "rw"]


@pytest.mark.parametrize("value", ["unbindable", "rshared,rw", "bogus"])
def test_other_rootfs_propagation_is_refused(value: str) -> None:
    s = spec()
    s.Linux.RootfsPropagation = value
    with pytest.raises(InvalidRequestError, match="RootfsPropagation"):
        oci_spec(s, layout=LAYOUT, container_id=CID, namespaces=NS, sandbox_container=False)
