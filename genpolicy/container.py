"""One entry of ``policy_data.containers``: what CreateContainer must look like for one container."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .env import EnvContext
from .errors import GenerateError
from .images import ImageInfo
from .mounts import (
    VolumeContext,
    apply_image_volumes,
    apply_settings_mounts,
    containerd_mounts,
    rootfs_propagation,
)
from .process import ProcessBuilder
from .resources import INITDATA_ANNOTATION, Workload
from .settings import Settings

MASKED_PATHS = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
LEGACY_POLICY_ANNOTATION = "io.katacontainers.config.agent.policy"
PAUSE_SECURITY_CONTEXT = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}


@dataclass(frozen=True)
class PodContainer:
    """A container of the pod as the runtime sees it: the pause container first, then init containers
    (in genpolicy's order), then the app containers."""

    spec: Mapping[str, Any]
    where: str  # YAML path, for errors and explanations
    is_pause: bool = False

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))


def pod_containers(workload: Workload, pause_image: str) -> list[PodContainer]:
    spec = workload.pod_spec
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise GenerateError(
            workload.label, workload.field_path("containers"), "missing or empty", "at least one container"
        )
    out = [
        PodContainer(
            {"name": "", "image": pause_image, "securityContext": PAUSE_SECURITY_CONTEXT},
            "(pause container)",
            is_pause=True,
        )
    ]
    inits = spec.get("initContainers") or []
    # genpolicy inserts each init container right after the pause container, so they end up reversed.
    for i in reversed(range(len(inits))):
        out.append(PodContainer(inits[i], workload.field_path(f"initContainers[{i}]")))
    for i, c in enumerate(containers):
        out.append(PodContainer(c, workload.field_path(f"containers[{i}]")))
    for c in out[1:]:
        if not isinstance(c.spec, dict) or not c.image:
            raise GenerateError(workload.label, f"{c.where}.image", "missing", "a container image reference")
    return out


def _security_context(spec: Mapping[str, Any]) -> dict[str, Any]:
    sc = spec.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def _annotations(
    workload: Workload, container: PodContainer, settings_spec: Mapping[str, Any]
) -> dict[str, str]:
    annotations = {str(k): str(v) for k, v in (workload.pod_metadata.get("annotations") or {}).items()}
    for key in (INITDATA_ANNOTATION, LEGACY_POLICY_ANNOTATION):
        annotations.pop(key, None)  # a previous run's policy is never part of the new one
    for key, value in (settings_spec.get("Annotations") or {}).items():
        annotations.setdefault(key, value)
    if workload.sandbox_name is not None:
        annotations.setdefault("io.kubernetes.cri.sandbox-name", f"^{workload.sandbox_name}$")
    if not container.is_pause:
        image = container.image if ":" in container.image else container.image + ":latest"
        annotations.setdefault("io.kubernetes.cri.image-name", image)
    annotations["io.kubernetes.cri.sandbox-namespace"] = workload.namespace
    if container.name:
        annotations.setdefault("io.kubernetes.cri.container-name", container.name)
    if container.is_pause:
        netns = "^/var/run/netns/cni" + ("test" if workload.pod_spec.get("hostNetwork") else "")
        netns += "-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
        annotations.setdefault("nerdctl/network-namespace", netns)
    return dict(sorted(annotations.items()))


def _namespaces(is_pause: bool, host_network: bool) -> list[dict[str, str]]:
    out = [{"Type": "ipc", "Path": ""}]
    if not is_pause or not host_network:
        out.append({"Type": "uts", "Path": ""})
    out.append({"Type": "mount", "Path": ""})
    return out


def exec_commands(spec: Mapping[str, Any]) -> list[list[str]]:
    """Commands of exec probes and lifecycle hooks: the only execs the policy lets the host run."""
    out = []
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        command = ((spec.get(probe) or {}).get("exec") or {}).get("command")
        if isinstance(command, list):
            out.append([str(c) for c in command])
    lifecycle = spec.get("lifecycle") or {}
    for hook in ("postStart", "preStop"):
        command = ((lifecycle.get(hook) or {}).get("exec") or {}).get("command")
        if isinstance(command, list):
            out.append([str(c) for c in command])
    return out


def _gpu_count(spec: Mapping[str, Any], keys: Sequence[str]) -> int:
    limits = (spec.get("resources") or {}).get("limits") or {}
    total = 0
    for key in keys:
        if key in limits:
            try:
                total += int(str(limits[key]))
            except ValueError:
                return 0
    return total


def container_policy(
    settings: Settings,
    workload: Workload,
    container: PodContainer,
    image: ImageInfo,
    env_ctx: EnvContext,
    any_privileged: bool,
) -> dict[str, Any]:
    spec = container.spec
    settings_spec = settings.container_settings(container.is_pause)
    sc = _security_context(spec)
    privileged = sc.get("privileged") is True
    read_only_root = sc.get("readOnlyRootFilesystem") is True
    pod_spec = workload.pod_spec

    process = ProcessBuilder(
        workload.label,
        container.where,
        pod_spec,
        spec,
        image,
        container.is_pause,
        settings.guest_pull,
        workload.field_path("").rstrip("."),
    ).build(env_ctx, settings_spec, settings.common, privileged)

    needs_privileged_mounts = privileged or (container.is_pause and any_privileged)
    mounts = containerd_mounts(container.is_pause, needs_privileged_mounts)
    apply_settings_mounts(settings, mounts, spec, container.is_pause, read_only_root)
    storages: list[dict[str, Any]] = []
    claim_templates = []
    if workload.kind == "StatefulSet":
        claim_templates = list((workload.doc.get("spec") or {}).get("volumeClaimTemplates") or [])
    VolumeContext(settings, workload.label, container.where, pod_spec).apply(
        spec, mounts, storages, claim_templates
    )
    volumes = image.config.get("Volumes")
    if isinstance(volumes, dict):
        apply_image_volumes(settings, mounts, sorted(volumes))

    linux: dict[str, Any] = {
        "Namespaces": _namespaces(container.is_pause, pod_spec.get("hostNetwork") is True),
        "MaskedPaths": [] if privileged else list(MASKED_PATHS),
        "ReadonlyPaths": [] if privileged else list(READONLY_PATHS),
        "Devices": [],
    }
    settings_linux = settings_spec.get("Linux", {})
    if settings_linux.get("MaskedPaths"):
        linux["MaskedPaths"] = list(settings_linux["MaskedPaths"])
    if settings_linux.get("ReadonlyPaths"):
        linux["ReadonlyPaths"] = list(settings_linux["ReadonlyPaths"])

    devices: list[dict[str, Any]] = []
    vfio = settings.doc["devices"]["vfio"]
    for i, vd in enumerate(spec.get("volumeDevices") or []):
        path = str(vd.get("devicePath", ""))
        if path.startswith(vfio["device_path"]):
            raise GenerateError(
                workload.label,
                f"{container.where}.volumeDevices[{i}].devicePath",
                f"{path} is reserved for VFIO passthrough",
                "another device path",
            )
        devices.append(_device(path))
        linux["Devices"].append({"Type": "", "Path": path})
    anno_patterns: dict[str, str] = {}
    gpus = _gpu_count(spec, vfio["nvidia"].get("pgpu_resource_keys", []))
    for _ in range(gpus):
        devices.append(_device(vfio["device_path"], vfio["nvidia"]["gpu_gk_device_type"]))
    if gpus:
        anno_patterns[vfio["anno_key_regex"]] = vfio["nvidia"]["gpu_anno_value_regex"]
    if not container.is_pause:
        anno_patterns["^io\\.kubernetes\\.container\\.terminationMessagePath$"] = "^/.*$"
        anno_patterns["^io\\.kubernetes\\.container\\.terminationMessagePolicy$"] = (
            "^(File|FallbackToLogsOnError)$"
        )
    linux["Devices"].extend(settings_linux.get("Devices", []))
    sysctl = dict(settings_linux.get("Sysctl", {}))
    for entry in (pod_spec.get("securityContext") or {}).get("sysctls") or []:
        sysctl[str(entry.get("name"))] = str(entry.get("value"))
    if sysctl:
        linux["Sysctl"] = dict(sorted(sysctl.items()))

    root = {"Path": settings_spec["Root"]["Path"], "Readonly": read_only_root}
    oci: dict[str, Any] = {
        "Version": settings.doc["kata_config"]["oci_version"],
        "Process": process,
        "Root": root,
    }
    if mounts:
        oci["Mounts"] = mounts
    oci["Annotations"] = _annotations(workload, container, settings_spec)
    rootfs = rootfs_propagation(spec)
    if rootfs:
        linux["RootfsPropagation"] = rootfs
    oci["Linux"] = linux
    erofs = {}
    if settings.host_erofs:
        if not image.erofs_layers:
            raise GenerateError(
                workload.label,
                f"{container.where}.image",
                f"no layer pins for {container.image}",
                "images resolved with layer images (host EROFS mode, image.layers)",
            )
        erofs = {"erofs_layers": [dict(pin) for pin in image.erofs_layers]}
    return {
        "yaml": {
            "resource": workload.label,
            "path": container.where,
            "pod": workload.field_path("").rstrip("."),
        },
        "OCI": oci,
        "storages": storages,
        "devices": devices,
        "sandbox_pidns": False if container.is_pause else pod_spec.get("shareProcessNamespace") is True,
        "exec_commands": exec_commands(spec),
        "runtime_anno_patterns": dict(sorted(anno_patterns.items())),
        **erofs,
    }


def _device(container_path: str, type_: str = "") -> dict[str, Any]:
    return {"id": "", "type_": type_, "vm_path": "", "container_path": container_path, "options": []}
