"""The OCI runtime spec (config.json) of a container, from the request's protobuf ``Spec``.

Converted field by field (PascalCase protobuf → runtime-spec JSON) and adjusted like kata-agent:

- namespaces: ``ipc`` and ``uts`` join the sandbox's persistent ones, ``pid`` is the sandbox's when
  the pod shares its process namespace (else a new one), ``mount`` and ``cgroup`` are new, no
  ``network`` namespace (containers share the VM's), paths from the host are never used;
- the rootfs is the bundle's ``rootfs`` (the verified storage mount): any other ``Root.Path`` is
  refused, so the host cannot hand a guest directory to a container as its root;
- bind mounts may only take their source from the agent's own trees (CopyFile'd files, the
  sandbox shm, storages under the bundle); other mount types from a fixed list;
- cgroups: cgroupfs path ``/kata/<cid>`` (not the host's string), memory/CPU/pids limits kept;
  devices, block I/O, network and cpuset resources dropped, like the runtime's own constraints;
- mount propagation (a mount's ``rshared``/``rslave`` option, ``rootfsPropagation``) is kept for
  crun: it matters only for the pod-shared volumes, the guest's only shared mounts;
- hooks, AppArmor and SELinux labels dropped (the guest has no LSM, kata replaces hooks); seccomp
  and user-namespace mappings are refused (the agent reports supports_seccomp = false).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from guest.protocols import oci_pb2

from .errors import InvalidRequestError
from .layout import Layout

__all__ = ["NamespacePaths", "oci_process", "oci_spec"]

OCI_VERSION = "1.1.0"
_MOUNT_TYPES = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bind"})
_ROOTFS_PROPAGATION = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
_CAPS = ("Bounding", "Effective", "Inheritable", "Permitted", "Ambient")


class NamespacePaths:
    """The sandbox's shared namespaces (files bind-mounted by CreateSandbox, or /proc/<pid>/ns/*)."""

    def __init__(self, ipc: Path | None, uts: Path | None, pid: Path | None) -> None:
        self.ipc, self.uts, self.pid = ipc, uts, pid


def oci_process(p: oci_pb2.Process, *, default_caps: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    if not p.Args:
        raise InvalidRequestError("Process.Args", [], "at least the program to run")
    user: dict[str, Any] = {"uid": p.User.UID, "gid": p.User.GID}
    if p.User.AdditionalGids:
        user["additionalGids"] = list(p.User.AdditionalGids)
    out: dict[str, Any] = {
        "terminal": p.Terminal,
        "user": user,
        "args": list(p.Args),
        "env": list(p.Env),
        "cwd": p.Cwd or "/",
        "noNewPrivileges": p.NoNewPrivileges,
    }
    if p.Cwd and not p.Cwd.startswith("/"):
        raise InvalidRequestError("Process.Cwd", p.Cwd, "an absolute path")
    if p.Terminal and (p.ConsoleSize.Height or p.ConsoleSize.Width):
        out["consoleSize"] = {"height": p.ConsoleSize.Height, "width": p.ConsoleSize.Width}
    if p.HasField("Capabilities"):
        out["capabilities"] = {c.lower(): list(getattr(p.Capabilities, c)) for c in _CAPS}
    elif default_caps is not None:
        out["capabilities"] = {k: list(v) for k, v in default_caps.items()}
    if p.Rlimits:
        out["rlimits"] = [{"type": r.Type, "hard": r.Hard, "soft": r.Soft} for r in p.Rlimits]
    if p.OOMScoreAdj:
        out["oomScoreAdj"] = p.OOMScoreAdj
    return out


def _bind_source_allowed(src: Path, container_id: str, volumes: Collection[Path]) -> bool:
    """Only what the agent provides: CopyFile'd files, the sandbox shm and resolv.conf, the pod's
    memory emptyDirs, the block-encrypted emptyDirs this request's storages opened, the container's
    own bundle — never another container's rootfs, the shared layers or agent state."""
    kata = Path("/run/kata-containers")
    if src in volumes:
        return True
    if src in (kata / "sandbox/resolv.conf", kata / "sandbox/shm"):
        return True
    ephemeral = kata / "sandbox/ephemeral"
    if src != ephemeral and src.is_relative_to(ephemeral):
        return True
    shared = kata / "shared/containers"
    own = kata / container_id
    return (src != shared and src.is_relative_to(shared)) or src.is_relative_to(own)


def _mounts(mounts: Any, layout: Layout, container_id: str,
            volumes: Collection[Path]) -> list[dict[str, Any]]:
    out = []
    for m in mounts:
        if not m.destination.startswith("/") or "/../" in f"{m.destination}/":
            raise InvalidRequestError("Mount.destination", m.destination, "an absolute path without '..'")
        kind = m.type or ("bind" if "bind" in m.options or "rbind" in m.options else "")
        if kind not in _MOUNT_TYPES:
            raise InvalidRequestError("Mount.type", m.type, f"one of {sorted(_MOUNT_TYPES)}")
        if kind == "bind":
            src = Path(m.source)
            if (not m.source.startswith("/") or "/../" in f"{m.source}/" or "/./" in f"{m.source}/"
                    or not _bind_source_allowed(src, container_id, volumes)):
                raise InvalidRequestError("Mount.source", m.source, "a CopyFile'd file, the sandbox shm, "
                                          "resolv.conf, a memory emptyDir, a block emptyDir among the "
                                          "request's storages, or a path in the container's own bundle")
        out.append({"destination": m.destination, "type": kind, "source": m.source,
                    "options": list(m.options)})
    return out


def _resources(r: oci_pb2.LinuxResources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.HasField("Memory"):
        mem: dict[str, Any] = {}
        if r.Memory.Limit:
            mem["limit"] = r.Memory.Limit
        if r.Memory.Reservation:
            mem["reservation"] = r.Memory.Reservation
        if r.Memory.Swap:
            mem["swap"] = r.Memory.Swap
        if r.Memory.DisableOOMKiller:
            mem["disableOOMKiller"] = True
        if mem:
            out["memory"] = mem
    if r.HasField("CPU"):
        cpu: dict[str, Any] = {}
        if r.CPU.Shares:
            cpu["shares"] = r.CPU.Shares
        if r.CPU.Quota:
            cpu["quota"] = r.CPU.Quota
        if r.CPU.Period:
            cpu["period"] = r.CPU.Period
        if cpu:
            out["cpu"] = cpu
    if r.HasField("Pids") and r.Pids.Limit:
        out["pids"] = {"limit": r.Pids.Limit}
    return out


def oci_spec(spec: oci_pb2.Spec, *, layout: Layout, container_id: str, namespaces: NamespacePaths,
             sandbox_container: bool, process: dict[str, Any] | None = None,
             volumes: Collection[Path] = ()) -> dict[str, Any]:
    """config.json for ``container_id`` (``process`` replaces the spec's, e.g. the pause process;
    ``volumes`` the mount points of the block emptyDirs the request's storages opened)."""
    rootfs = layout.rootfs(container_id)
    if spec.Root.Path and Path(spec.Root.Path) != Path("/run/kata-containers") / container_id / "rootfs":
        raise InvalidRequestError("OCI.Root.Path", spec.Root.Path,
                                  f"/run/kata-containers/{container_id}/rootfs (the verified storage)")
    linux = spec.Linux
    if linux.HasField("Seccomp") and (linux.Seccomp.DefaultAction or linux.Seccomp.Syscalls):
        raise InvalidRequestError("OCI.Linux.Seccomp", "<profile>", "none (supports_seccomp is false)")
    if linux.UIDMappings or linux.GIDMappings:
        raise InvalidRequestError("OCI.Linux.UIDMappings", "<mappings>", "none (no user namespaces)")
    ns: list[dict[str, str]] = [{"type": "mount"}, {"type": "cgroup"}]
    for kind, path in (("ipc", namespaces.ipc), ("uts", namespaces.uts)):
        ns.append({"type": kind, "path": str(path)} if path is not None else {"type": kind})
    if namespaces.pid is not None and not sandbox_container:
        ns.append({"type": "pid", "path": str(namespaces.pid)})
    else:
        ns.append({"type": "pid"})
    out: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process if process is not None else oci_process(spec.Process),
        "root": {"path": str(rootfs), "readonly": spec.Root.Readonly},
        "mounts": _mounts(spec.Mounts, layout, container_id, volumes),
        "annotations": dict(spec.Annotations),
        "linux": {
            "namespaces": ns,
            "cgroupsPath": layout.cgroup(container_id),
            "resources": _resources(linux.Resources),
            "maskedPaths": list(linux.MaskedPaths),
            "readonlyPaths": list(linux.ReadonlyPaths),
        },
    }
    if linux.Sysctl:
        out["linux"]["sysctl"] = dict(linux.Sysctl)
    if linux.RootfsPropagation:
        # containerd's CRI sets rshared for a container with a Bidirectional mount and rslave for
        # one with HostToContainer; only the pod-shared volumes are shared mounts in the guest, so
        # no other guest mount is a peer of the container's.
        if linux.RootfsPropagation not in _ROOTFS_PROPAGATION:
            raise InvalidRequestError("OCI.Linux.RootfsPropagation", linux.RootfsPropagation,
                                      ", ".join(_ROOTFS_PROPAGATION))
        out["linux"]["rootfsPropagation"] = linux.RootfsPropagation
    # Joining the sandbox's UTS namespace: it already carries the pod's hostname.
    if spec.Hostname and namespaces.uts is None:
        out["hostname"] = spec.Hostname
    return out
