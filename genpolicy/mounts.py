"""OCI mounts and agent storages a container's policy expects, as genpolicy derives them.

Three layers: containerd's default mounts, the settings' mounts (kept when their destination is in
``mount_destinations`` or mounted by the YAML), then one mount (and maybe a storage) per volumeMount
and per image VOLUME.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import GenerateError
from .settings import Settings, storage_fields

Mount = dict[str, Any]


def _mount(destination: str, type_: str, source: str, options: Sequence[str]) -> Mount:
    return {"destination": destination, "source": source, "type_": type_, "options": list(options)}


def containerd_mounts(is_pause: bool, privileged: bool) -> list[Mount]:
    """The mounts containerd's CRI plugin puts into every spec."""
    sysfs = "rw" if privileged else "ro"
    mounts = [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", sysfs]),
    ]
    if not is_pause:
        mounts.append(
            _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", sysfs])
        )
    return mounts


# containerd's CRI: a volumeMount's mountPropagation becomes the bind's propagation option and
# (the strongest of the container's) the spec's Linux.RootfsPropagation.
PROPAGATION = {"Bidirectional": "rshared", "HostToContainer": "rslave"}


def propagation(vm: Mapping[str, Any]) -> str:
    """The propagation option containerd gives the bind of ``vm`` (Kata's genpolicy pins rprivate for
    every emptyDir; Contrast's follows mountPropagation, which its secure-pv sidecar needs)."""
    return PROPAGATION.get(str(vm.get("mountPropagation", "None")), "rprivate")


def rootfs_propagation(container: Mapping[str, Any]) -> str:
    """containerd's Linux.RootfsPropagation for the container: rshared if one of its mounts is
    Bidirectional, else rslave if one is HostToContainer, else unset."""
    kinds = {propagation(vm) for vm in container.get("volumeMounts") or []}
    return "rshared" if "rshared" in kinds else "rslave" if "rslave" in kinds else ""


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) or path


def _find(mounts: list[Mount], destination: str) -> Mount | None:
    return next((m for m in mounts if m["destination"] == destination), None)


def _put(mounts: list[Mount], new: Mount) -> None:
    """Replace the mount with the same destination in place, or append."""
    existing = _find(mounts, new["destination"])
    if existing is None:
        mounts.append(new)
    else:
        existing.update(type_=new["type_"], source=new["source"], options=list(new["options"]))


def apply_settings_mounts(
    settings: Settings,
    mounts: list[Mount],
    container: Mapping[str, Any],
    is_pause: bool,
    read_only_root: bool,
) -> None:
    destinations = set(settings.doc["mount_destinations"])
    yaml_paths = {m.get("mountPath") for m in container.get("volumeMounts") or []}
    access = "ro" if read_only_root else "rw"
    for s_mount in settings.container_settings(is_pause).get("Mounts", []):
        if s_mount["destination"] not in destinations and s_mount["destination"] not in yaml_paths:
            continue
        mount = _mount(
            s_mount["destination"],
            s_mount.get("type_", ""),
            s_mount.get("source", ""),
            s_mount.get("options", []),
        )
        if mount["destination"] == "/dev/termination-log" and container.get("terminationMessagePath"):
            mount["destination"] = str(container["terminationMessagePath"])
        if not mount["source"] and mount["type_"] == "bind":
            mount["source"] = f"$(sfprefix){_basename(mount['destination'])}$"
        existing = _find(mounts, s_mount["destination"])
        if existing is not None:
            existing.update(type_=mount["type_"], source=mount["source"], options=list(mount["options"]))
            continue
        if not is_pause and mount["destination"] in ("/etc/hostname", "/etc/resolv.conf"):
            mount["options"].append(access)
        mounts.append(mount)


class VolumeContext:
    """Volume mounts of one container against the pod's volumes."""

    def __init__(self, settings: Settings, resource: str, where: str, pod_spec: Mapping[str, Any]) -> None:
        self.settings = settings
        self.resource = resource
        self.where = where
        self.pod_spec = pod_spec
        sc = pod_spec.get("securityContext") or {}
        self.fs_group = sc.get("fsGroup") if isinstance(sc, dict) else None

    def apply(
        self,
        container: Mapping[str, Any],
        mounts: list[Mount],
        storages: list[dict[str, Any]],
        claim_templates: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        volumes = {v.get("name"): v for v in self.pod_spec.get("volumes") or []}
        claims = {(c.get("metadata") or {}).get("name") for c in claim_templates}
        for i, vm in enumerate(container.get("volumeMounts") or []):
            where = f"{self.where}.volumeMounts[{i}]"
            if "subPath" in vm:
                raise GenerateError(
                    self.resource,
                    f"{where}.subPath",
                    "is not supported by Kata",
                    "a volumeMount without subPath",
                )
            if not isinstance(vm.get("mountPath"), str) or not vm["mountPath"].startswith("/"):
                raise GenerateError(
                    self.resource, f"{where}.mountPath", f"got {vm.get('mountPath')!r}", "an absolute path"
                )
            if vm.get("name") in claims:
                _put(
                    mounts,
                    _mount(
                        vm["mountPath"],
                        "bind",
                        "^/run/kata-containers/shared/containers/$(bundle-id)-[a-z0-9]{16}-"
                        + _basename(vm["mountPath"])
                        + "$",
                        ["rbind", "rprivate", "rw"],
                    ),
                )
            volume = volumes.get(vm.get("name"))
            if volume is None:
                if vm.get("name") in claims:
                    continue
                raise GenerateError(
                    self.resource,
                    f"{where}.name",
                    f"no volume named {vm.get('name')!r}",
                    "a volume of the pod spec",
                )
            self._one(volume, vm, where, mounts, storages)

    def _one(
        self,
        volume: Mapping[str, Any],
        vm: Mapping[str, Any],
        where: str,
        mounts: list[Mount],
        storages: list[dict[str, Any]],
    ) -> None:
        access = "ro" if vm.get("readOnly") is True else "rw"
        if "emptyDir" in volume:
            self._empty_dir(volume.get("emptyDir") or {}, vm, mounts, storages, access)
        elif "persistentVolumeClaim" in volume or "azureFile" in volume:
            self._shared_bind(vm, mounts, propagation(vm), "rw")
        elif "hostPath" in volume:
            self._host_path(volume["hostPath"], vm, mounts, access)
        elif "configMap" in volume or "secret" in volume:
            self._config_map(vm, mounts, storages)
        elif "projected" in volume:
            self._shared_bind(vm, mounts, propagation(vm), "ro")
        elif "downwardAPI" in volume:
            _put(
                mounts,
                _mount(
                    vm["mountPath"],
                    "bind",
                    f"$(sfprefix){_basename(vm['mountPath'])}$",
                    ["rbind", propagation(vm), "ro"],
                ),
            )
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise GenerateError(
                self.resource,
                f"{self.where_volume(volume)}",
                f"unsupported volume type {kinds}",
                "emptyDir, configMap, secret, projected, downwardAPI, hostPath or a PVC",
            )

    def where_volume(self, volume: Mapping[str, Any]) -> str:
        return f"volumes[name={volume.get('name')}]"

    def _shared_bind(self, vm: Mapping[str, Any], mounts: list[Mount], propagation: str, access: str) -> None:
        source = f"$(sfprefix){re.escape(_basename(vm['mountPath']))}$"
        _put(mounts, _mount(vm["mountPath"], "bind", source, ["rbind", propagation, access]))

    def _host_path(
        self, host_path: Mapping[str, Any], vm: Mapping[str, Any], mounts: list[Mount], access: str
    ) -> None:
        path = str(host_path.get("path", ""))
        if path.startswith(("/dev/", "/sys/")):
            _put(mounts, _mount(vm["mountPath"], "bind", path, ["rbind", propagation(vm), access]))
        else:
            self._shared_bind(vm, mounts, propagation(vm), access)

    def _config_map(self, vm: Mapping[str, Any], mounts: list[Mount], storages: list[dict[str, Any]]) -> None:
        cm = self.settings.doc["volumes"]["configMap"]
        name = _basename(vm["mountPath"])
        if self.settings.doc["kata_config"].get("enable_configmap_secret_storages"):
            storages.append(
                storage_fields(
                    {
                        "driver": cm["driver"],
                        "source": f"{cm['mount_source']}{name}$",
                        "fstype": cm["fstype"],
                        "options": cm["options"],
                        "mount_point": f"{cm['mount_point']}{name}$",
                    }
                )
            )
        mounts.append(_mount(vm["mountPath"], cm["mount_type"], f"{cm['mount_point']}{name}$", cm["options"]))

    def _empty_dir(
        self,
        empty_dir: Mapping[str, Any],
        vm: Mapping[str, Any],
        mounts: list[Mount],
        storages: list[dict[str, Any]],
        access: str,
    ) -> None:
        volumes = self.settings.doc["volumes"]
        kind = self.settings.cluster_config["emptydir_type"]
        if empty_dir.get("medium") == "Memory":
            spec, block = volumes["emptyDir_memory"], False
        elif kind == "block-encrypted":
            spec, block = volumes["emptyDir_encrypted"], True
        elif kind == "block-plain":
            spec, block = volumes["emptyDir_plain"], True
        else:
            spec, block = volumes["emptyDir"], False
        if empty_dir.get("medium") != "Memory" and not block:
            name = re.escape(str(vm.get("name", "")))
            for source in (
                f"^$(cpath)/sandbox-[0-9a-f]{{16}}-{name}$",
                f"$(sfprefix){re.escape(_basename(vm['mountPath']))}$",
            ):
                mounts.append(_mount(vm["mountPath"], "bind", source, ["rbind", propagation(vm), access]))
            return
        sub_path_expr = "subPathExpr" in vm
        if not sub_path_expr:
            options = list(spec["options"])
            fs_group = None
            if block:
                if isinstance(self.fs_group, int) and self.fs_group > 0:
                    fs_group = {"group_id": self.fs_group, "group_change_policy": 0}
            elif isinstance(self.fs_group, int) and self.fs_group != 0:
                options.append(f"fsgid={self.fs_group}")
            mount_point = spec["mount_point"]
            if mount_point.endswith("/"):
                mount_point = f"{mount_point}{vm.get('name')}$"
            storages.append(
                storage_fields(
                    {
                        "driver": spec["driver"],
                        "driver_options": spec["driver_options"],
                        "source": spec["source"],
                        "fstype": spec["fstype"],
                        "options": options,
                        "mount_point": mount_point,
                        "fs_group": fs_group,
                        "shared": spec.get("shared", False),
                    }
                )
            )
        if sub_path_expr:
            source = f"{volumes['configMap']['mount_source']}{_basename(vm['mountPath'])}$"
            mount_type = "bind"
        else:
            source = f"{spec['mount_source']}{vm.get('name')}$" if spec["mount_source"] else ""
            mount_type = spec["mount_type"]
        mounts.append(_mount(vm["mountPath"], mount_type, source, ["rbind", propagation(vm), access]))


def apply_image_volumes(settings: Settings, mounts: list[Mount], image_volumes: Sequence[str]) -> None:
    """An image VOLUME not covered by a YAML mount gets the settings' image_volume mount."""
    spec = settings.doc["volumes"]["image_volume"]
    for raw in image_volumes:
        destination = re.sub("/+", "/", raw)
        if _find(mounts, destination) is not None:
            continue
        mounts.append(
            _mount(
                destination,
                spec["fstype"],
                f"{spec['mount_source']}{_basename(destination)}$",
                spec["options"],
            )
        )
