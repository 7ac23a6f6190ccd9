"""What ``contrast generate`` adds to a confidential workload before its policy is generated.

Contrast's mutators: the ``contrast-secrets`` in-memory volume at ``/contrast`` in every container,
the Initializer as the first init container (not for the Coordinator, not with the skip
annotation), the service-mesh proxy as a native sidecar when the pod asks for one, and with the
``secure-pv`` annotation the Initializer as the encrypted volume's sidecar. Only pods whose runtime
class starts with ``contrast-cc`` are touched; the runtime class is normalised to ``contrast-cc``.

secure-pv (``<device volume>:<mount volume>``), as Contrast: the Initializer gets
``CRYPTSETUP_DEVICE=/dev/csi0``, the device volume at /dev/csi0, the mount volume at /state with
Bidirectional propagation, privileged, 100 Mi of memory, a ``/done`` startup probe and
``restartPolicy: Always``; every other container mounting the mount volume gets HostToContainer.
Unlike Contrast, the mount volume is made ``emptyDir: {medium: Memory}``: in the pod VM that is one
tmpfs of the pod, a shared mount the sidecar's mount propagates through, and the policy pins it by
name; a disk emptyDir is a CopyFile'd directory per container (shared-fs) or a block volume the
policy does not tie to its mount (block-encrypted). The tmpfs holds only the mount point: the
data is on the encrypted volume.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genpolicy import GenerateError, Workload

RUNTIME_CLASS = "contrast-cc"
ANNOTATION = "contrast.edgeless.systems/"
POD_ROLE = ANNOTATION + "pod-role"
SKIP_INITIALIZER = ANNOTATION + "skip-initializer"
MESH_INGRESS = ANNOTATION + "servicemesh-ingress"
MESH_EGRESS = ANNOTATION + "servicemesh-egress"
MESH_ADMIN = ANNOTATION + "servicemesh-admin-interface-port"
WORKLOAD_SECRET_ID = ANNOTATION + "workload-secret-id"
SECURE_PV = ANNOTATION + "secure-pv"
SECURE_PV_DEVICE = "/dev/csi0"
SECURE_PV_MOUNT = "/state"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

SECRETS_VOLUME = "contrast-secrets"
SECRETS_PATH = "/contrast"
INITIALIZER = "contrast-initializer"
MESH_PROXY = "contrast-service-mesh"


@dataclass(frozen=True)
class Images:
    """The images of our own parts, pinned by digest."""

    initializer: str
    service_mesh: str


def is_confidential(workload: Workload) -> bool:
    return workload.runtime_class.startswith(RUNTIME_CLASS)


def role(workload: Workload) -> str:
    value = (workload.pod_metadata.get("annotations") or {}).get(POD_ROLE, "")
    return str(value)


def _secrets_mount() -> dict[str, Any]:
    return {"name": SECRETS_VOLUME, "mountPath": SECRETS_PATH}


def _ensure_volume(workload: Workload, spec: dict[str, Any]) -> None:
    volumes = spec.setdefault("volumes", [])
    if not isinstance(volumes, list):
        raise GenerateError(workload.label, workload.field_path("volumes"), "not a list", "a list of volumes")
    for volume in volumes:
        if isinstance(volume, dict) and volume.get("name") == SECRETS_VOLUME:
            if volume.get("emptyDir") is None or len(volume) != 2:
                raise GenerateError(
                    workload.label,
                    workload.field_path(f"volumes[name={SECRETS_VOLUME}]"),
                    "is not an emptyDir",
                    f"the {SECRETS_VOLUME} volume to be an emptyDir",
                )
            return
    volumes.append({"name": SECRETS_VOLUME, "emptyDir": {"medium": "Memory"}})


def _mount_everywhere(spec: dict[str, Any]) -> None:
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            mounts = container.setdefault("volumeMounts", [])
            if not any(m.get("name") == SECRETS_VOLUME for m in mounts):
                mounts.append(_secrets_mount())


def _initializer(image: str, mesh_disabled: bool) -> dict[str, Any]:
    env = [{"name": "COORDINATOR_HOST", "value": "coordinator"}]
    if mesh_disabled:
        env.append({"name": "CONTRAST_SERVICE_MESH_DISABLED", "value": "true"})
    return {
        "name": INITIALIZER,
        "image": image,
        "env": env,
        "resources": {"requests": {"memory": "50Mi"}, "limits": {"memory": "50Mi"}},
        "volumeMounts": [_secrets_mount()],
    }


def _mesh_proxy(image: str, annotations: Mapping[str, Any]) -> dict[str, Any]:
    env = [
        {"name": "CONTRAST_INGRESS_PROXY_CONFIG", "value": str(annotations.get(MESH_INGRESS, ""))},
        {"name": "CONTRAST_EGRESS_PROXY_CONFIG", "value": str(annotations.get(MESH_EGRESS, ""))},
    ]
    container: dict[str, Any] = {
        "name": MESH_PROXY,
        "image": image,
        "restartPolicy": "Always",
        "args": ["-l", "debug"],
        "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
        "startupProbe": {
            "exec": {"command": ["test", "-f", "/ready"]},
            "initialDelaySeconds": 1,
            "periodSeconds": 5,
            "failureThreshold": 5,
        },
        "volumeMounts": [_secrets_mount()],
    }
    if MESH_ADMIN in annotations:
        port = str(annotations[MESH_ADMIN])
        env.append({"name": "CONTRAST_ADMIN_PORT", "value": port})
        if port.isdigit():
            container["ports"] = [{"name": "contrast-admin", "containerPort": int(port)}]
    container["env"] = env
    return container


def inject(
    workload: Workload,
    images: Images | None,
    *,
    skip_initializer: bool = False,
    skip_service_mesh: bool = False,
) -> list[str]:
    """Mutate a confidential workload in place; return what was added (for the CLI's report)."""
    spec = workload.pod_spec
    spec["runtimeClassName"] = RUNTIME_CLASS
    annotations = workload.pod_metadata.get("annotations") or {}
    added: list[str] = []
    if role(workload) == "coordinator":
        return added
    wants_initializer = not skip_initializer and str(annotations.get(SKIP_INITIALIZER, "")).lower() != "true"
    wants_mesh = not skip_service_mesh and any(
        k in annotations for k in (MESH_INGRESS, MESH_EGRESS, MESH_ADMIN)
    )
    if (wants_initializer or wants_mesh) and images is None:
        raise GenerateError(
            workload.label,
            "(injection)",
            "no images for the Initializer and mesh proxy",
            "--initializer-image and --service-mesh-image pinned by digest",
        )
    inits = spec.setdefault("initContainers", [])
    if not isinstance(inits, list):
        raise GenerateError(workload.label, workload.field_path("initContainers"), "not a list", "a list")
    names = {c.get("name") for c in inits if isinstance(c, dict)}
    if wants_initializer and INITIALIZER not in names:
        assert images is not None
        inits.insert(0, _initializer(images.initializer, mesh_disabled=not wants_mesh))
        added.append(INITIALIZER)
    if wants_mesh and MESH_PROXY not in names:
        assert images is not None
        position = 1 if inits and inits[0].get("name") == INITIALIZER else 0
        inits.insert(position, _mesh_proxy(images.service_mesh, annotations))
        added.append(MESH_PROXY)
    if SECURE_PV in annotations:
        initializer = next((c for c in inits if isinstance(c, dict) and c.get("name") == INITIALIZER), None)
        if initializer is None:
            raise GenerateError(
                workload.label, f"{_annotations_path(workload)}[{SECURE_PV}]", "no Initializer",
                "the Initializer injected (no skip-initializer)",
            )
        _secure_pv(workload, spec, initializer, str(annotations[SECURE_PV]))
    if not inits:
        del spec["initContainers"]
    if added or wants_initializer:
        _ensure_volume(workload, spec)
        _mount_everywhere(spec)
    return added


def _annotations_path(workload: Workload) -> str:
    prefix = f"{workload.template_path}." if workload.template_path else ""
    return f"{prefix}metadata.annotations"


def _secure_pv(workload: Workload, spec: dict[str, Any], initializer: dict[str, Any], value: str) -> None:
    where = _annotations_path(workload)
    device, _, mount = value.partition(":")
    if not (_DNS_LABEL.fullmatch(device) and _DNS_LABEL.fullmatch(mount)) or device == mount:
        raise GenerateError(workload.label, f"{where}[{SECURE_PV}]", repr(value),
                            "<device volume>:<mount volume>, two different volume names")
    volumes = spec.setdefault("volumes", [])
    by_name = {v.get("name"): v for v in volumes if isinstance(v, dict)}
    templates = (workload.doc.get("spec") or {}).get("volumeClaimTemplates") or [] \
        if workload.kind == "StatefulSet" else []
    template = next((t for t in templates if (t.get("metadata") or {}).get("name") == device), None)
    source = by_name.get(device)
    if template is not None:
        if (template.get("spec") or {}).get("volumeMode") != "Block":
            raise GenerateError(workload.label, f"volumeClaimTemplates[name={device}].spec.volumeMode",
                                repr((template.get("spec") or {}).get("volumeMode")), "Block")
    elif source is None or not ("persistentVolumeClaim" in source or "iscsi" in source):
        raise GenerateError(workload.label, workload.field_path(f"volumes[name={device}]"),
                            "no such PVC or iSCSI volume", f"the {SECURE_PV} device volume, in block mode")
    state = by_name.get(mount)
    if state is None:
        volumes.append({"name": mount, "emptyDir": {"medium": "Memory"}})
    elif "emptyDir" not in state or len(state) != 2:
        raise GenerateError(workload.label, workload.field_path(f"volumes[name={mount}]"),
                            "is not an emptyDir", f"the {SECURE_PV} mount volume to be an emptyDir")
    else:
        state["emptyDir"] = {**(state["emptyDir"] or {}), "medium": "Memory"}
    env = initializer.setdefault("env", [])
    if not any(e.get("name") == "CRYPTSETUP_DEVICE" for e in env):
        env.append({"name": "CRYPTSETUP_DEVICE", "value": SECURE_PV_DEVICE})
    devices = initializer.setdefault("volumeDevices", [])
    if not any(d.get("name") == device for d in devices):
        devices.append({"name": device, "devicePath": SECURE_PV_DEVICE})
    mounts = initializer.setdefault("volumeMounts", [])
    if not any(m.get("name") == mount for m in mounts):
        mounts.append({"name": mount, "mountPath": SECURE_PV_MOUNT, "mountPropagation": "Bidirectional"})
    initializer["securityContext"] = {**(initializer.get("securityContext") or {}), "privileged": True}
    initializer["resources"] = {"requests": {"memory": "100Mi"}, "limits": {"memory": "100Mi"}}
    initializer["startupProbe"] = {"exec": {"command": ["test", "-f", "/done"]}, "periodSeconds": 5,
                                   "failureThreshold": 20}
    initializer["restartPolicy"] = "Always"
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if container is initializer:
                continue
            for m in container.get("volumeMounts") or []:
                if m.get("name") == mount and m.get("mountPropagation", "None") == "None":
                    m["mountPropagation"] = "HostToContainer"


def workload_secret_id(workload: Workload) -> str:
    """Contrast's default ``<group or core>/<version>/<Kind>/<namespace>/<name>``, or the annotation."""
    annotations = workload.pod_metadata.get("annotations") or {}
    if WORKLOAD_SECRET_ID in annotations:
        return str(annotations[WORKLOAD_SECRET_ID])
    api = str(workload.doc.get("apiVersion", "v1"))
    group, _, version = api.rpartition("/")
    return "/".join(
        [
            group or "core",
            version,
            workload.kind,
            workload.namespace or "default",
            str(workload.metadata.get("name", "")),
        ]
    )
