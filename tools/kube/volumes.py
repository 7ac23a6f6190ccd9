"""The pod's volumes on the node, laid out as kubelet lays them out under its root directory.

``<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>``: an emptyDir is a directory (mode 0777), a
tmpfs for ``medium: Memory``;
configMap, secret, projected and downwardAPI volumes are written like kubelet's atomic writer: the
files in a ``..<timestamp>`` directory, a ``..data`` symlink to it (renamed into place), and one
symlink per top-level entry pointing through ``..data`` — which is what Kata's runtime walks and
copies into the guest."""

from __future__ import annotations

import os
import posixpath
import secrets
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.files import atomic_write

from .errors import KubeObjectError
from .objects import PodPlan

__all__ = ["PodVolumes", "field_value", "make_rshared", "undo_rshared", "write_atomic_dir"]

PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "projected": "kubernetes.io~projected",
    "downwardAPI": "kubernetes.io~downward-api",
}
MAX_FILES = 1024


def field_value(plan: PodPlan, path: str, pod_ip: str, host_ip: str, resource: str) -> str:
    """A downward-API ``fieldPath`` for the fields kubelet resolves itself."""
    simple = {
        "metadata.name": plan.name,
        "metadata.namespace": plan.namespace,
        "metadata.uid": plan.uid,
        "spec.nodeName": os.uname().nodename,
        "spec.serviceAccountName": str(plan.spec.get("serviceAccountName", "default")),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        items = plan.labels if path == "metadata.labels" else plan.annotations
        return "".join(f'{k}="{v}"\n' for k, v in sorted(items.items()))
    for prefix, items in (("metadata.labels", plan.labels), ("metadata.annotations", plan.annotations)):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return items.get(path[len(prefix) + 2 : -2], "")
    raise KubeObjectError(resource, "fieldRef.fieldPath", path, "a field kubelet resolves")


def _mount_entry(directory: Path) -> tuple[bool, bool]:
    """(``directory`` is a mount point, the mount holding it is shared) from /proc/self/mountinfo."""
    target = os.path.realpath(directory)
    best, shared, exact = "", False, False
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equal points is the visible one
            best, exact = point, point == target
            shared = any(f.startswith("shared:") for f in fields[6 : fields.index("-")])
    return exact, shared


def make_rshared(directory: Path) -> bool:
    """kubelet's ``MakeRShared`` of its root directory at start: unless the mount holding it is
    shared already, ``directory`` is bind-mounted onto itself and made rshared, so the pods'
    volumes under it sit on a shared mount — containerd's CRI refuses a Bidirectional mount whose
    source is not on a shared mount, and a HostToContainer one unless shared or slave. True if a
    bind mount was made (``undo_rshared`` removes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    exact, shared = _mount_entry(directory)
    if shared:
        return False
    if not exact:
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True, capture_output=True,
                       timeout=30)
    subprocess.run(["mount", "--make-rshared", str(directory)], check=True, capture_output=True, timeout=30)
    return not exact


def undo_rshared(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True, timeout=30)


def _check_relative(resource: str, where: str, path: str) -> str:
    norm = posixpath.normpath(path)
    if not path or path.startswith("/") or norm.startswith("..") or norm == ".":
        raise KubeObjectError(resource, where, repr(path), "a relative path without '..'")
    return norm


def write_atomic_dir(target: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """kubelet's AtomicWriter: payload in ``..<ts>``, ``..data`` → it, visible names → ``..data/<name>``."""
    if len(files) > MAX_FILES:
        raise KubeObjectError(str(target), "items", f"{len(files)} files", f"at most {MAX_FILES}")
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    ts_name = f"..{stamp}.{secrets.randbelow(10**9):09d}"
    ts_dir = target / ts_name
    ts_dir.mkdir(mode=0o755)
    for rel, (data, mode) in sorted(files.items()):
        path = ts_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=mode)
        os.chmod(path, mode)  # the umask must not change a defaultMode
    tmp = target / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(ts_name)
    os.replace(tmp, target / "..data")
    for top in sorted({rel.split("/", 1)[0] for rel in files}):
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")


class PodVolumes:
    """Creates the pod's directory and its volumes; ``path(name)`` is a volume's host directory."""

    def __init__(self, root: Path, plan: PodPlan) -> None:
        self.plan = plan
        self.pod_dir = root / "pods" / plan.uid
        self.paths: dict[str, Path] = {}
        self.resource = f"Pod/{plan.name}"

    def _items(
        self, data: Mapping[str, bytes], spec: Mapping[str, Any], where: str, default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        items = spec.get("items")
        out: dict[str, tuple[bytes, int]] = {}
        if not items:
            for key, value in data.items():
                out[_check_relative(self.resource, where, key)] = (value, default_mode)
            return out
        for i, item in enumerate(items):
            key = str(item.get("key", ""))
            if key not in data:
                if spec.get("optional") is True:
                    continue
                raise KubeObjectError(self.resource, f"{where}.items[{i}].key", key, "a key of the source")
            rel = _check_relative(self.resource, f"{where}.items[{i}].path", str(item.get("path", "")))
            out[rel] = (data[key], int(item.get("mode", default_mode)))
        return out

    def _source(self, kind: str, spec: Mapping[str, Any], where: str) -> Mapping[str, bytes]:
        name = str(spec.get("name") if kind == "configMap" else spec.get("secretName", spec.get("name")))
        store = self.plan.config_maps if kind == "configMap" else self.plan.secrets
        if name not in store:
            if spec.get("optional") is True:
                return {}
            raise KubeObjectError(
                self.resource, where, f"{kind} {name!r} not found", "an object in the files"
            )
        return store[name]

    def _downward(
        self, spec: Mapping[str, Any], where: str, default_mode: int, pod_ip: str, host_ip: str
    ) -> dict[str, tuple[bytes, int]]:
        out: dict[str, tuple[bytes, int]] = {}
        for i, item in enumerate(spec.get("items") or []):
            rel = _check_relative(self.resource, f"{where}.items[{i}].path", str(item.get("path", "")))
            ref = item.get("fieldRef")
            if not isinstance(ref, dict):
                raise KubeObjectError(self.resource, f"{where}.items[{i}]", "no fieldRef", "a fieldRef")
            value = field_value(self.plan, str(ref.get("fieldPath", "")), pod_ip, host_ip, self.resource)
            out[rel] = (value.encode(), int(item.get("mode", default_mode)))
        return out

    def setup(self, pod_ip: str, host_ip: str) -> None:
        volumes_dir = self.pod_dir / "volumes"
        for i, volume in enumerate(self.plan.spec.get("volumes") or []):
            name = str(volume.get("name", ""))
            where = f"spec.volumes[{i}]"
            kind = next((k for k in PLUGIN_DIRS if k in volume), None)
            if kind is None:
                if "hostPath" in volume:
                    self.paths[name] = Path(str((volume["hostPath"] or {}).get("path", "")))
                    continue
                if "persistentVolumeClaim" in volume:
                    continue  # block mode only: a CRI device (Kubelet.block_devices), no directory
                raise KubeObjectError(
                    self.resource,
                    where,
                    f"volume {name!r}",
                    "emptyDir, configMap, secret, projected, downwardAPI or hostPath",
                )
            target = volumes_dir / PLUGIN_DIRS[kind] / _check_relative(self.resource, f"{where}.name", name)
            spec = volume.get(kind) or {}
            mode = int(spec.get("defaultMode", 0o644))
            if kind == "emptyDir":
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
                fs_group = (self.plan.spec.get("securityContext") or {}).get("fsGroup")
                if isinstance(fs_group, int) and fs_group > 0 and spec.get("medium") != "Memory":
                    # kubelet's volume ownership: the pod's fsGroup owns the volume, setgid (Kata's
                    # runtime hands that group to the guest for a block emptyDir)
                    os.chown(target, -1, fs_group)
                    target.chmod(0o2777)
                if spec.get("medium") == "Memory":
                    # As kubelet: a tmpfs, which Kata's runtime turns into the guest's ephemeral storage.
                    subprocess.run(
                        ["mount", "-t", "tmpfs", "-o", "mode=0777", "tmpfs", str(target)],
                        check=True,
                        capture_output=True,
                        timeout=30,
                    )
            elif kind in ("configMap", "secret"):
                data = self._source(kind, spec, f"{where}.{kind}")
                write_atomic_dir(target, self._items(data, spec, f"{where}.{kind}", mode))
            elif kind == "downwardAPI":
                write_atomic_dir(target, self._downward(spec, f"{where}.downwardAPI", mode, pod_ip, host_ip))
            else:
                files: dict[str, tuple[bytes, int]] = {}
                for j, source in enumerate(spec.get("sources") or []):
                    sw = f"{where}.projected.sources[{j}]"
                    if "serviceAccountToken" in source:
                        token = source["serviceAccountToken"] or {}
                        rel = _check_relative(self.resource, f"{sw}.path", str(token.get("path", "token")))
                        # No API server here: an opaque token stands in for the signed one.
                        files[rel] = (f"tools.kube.{secrets.token_urlsafe(24)}".encode(), mode)
                    elif "configMap" in source or "secret" in source:
                        sub = "configMap" if "configMap" in source else "secret"
                        sspec = source[sub] or {}
                        data = self._source(sub, sspec, f"{sw}.{sub}")
                        files.update(self._items(data, sspec, f"{sw}.{sub}", mode))
                    elif "downwardAPI" in source:
                        files.update(self._downward(source["downwardAPI"] or {}, sw, mode, pod_ip, host_ip))
                    else:
                        raise KubeObjectError(self.resource, sw, "unknown source", "a supported source")
                write_atomic_dir(target, files)
            self.paths[name] = target

    def path(self, name: str, where: str) -> Path:
        if name not in self.paths:
            raise KubeObjectError(self.resource, where, f"volume {name!r}", "a volume of the pod")
        return self.paths[name]
