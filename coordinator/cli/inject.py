"""What ``contrast generate`` adds to a confidential workload before its policy is generated.

Contrast's mutators: the ``contrast-secrets`` in-memory volume at ``/contrast`` in every container,
the Initializer as the first init container (not for the Coordinator, not with the skip
annotation), and the service-mesh proxy as a native sidecar when the pod asks for one. Only pods
whose runtime class starts with ``contrast-cc`` are touched; the runtime class is normalised to
``contrast-cc``.
"""

from __future__ import annotations

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
    if not inits:
        del spec["initContainers"]
    if added or wants_initializer:
        _ensure_volume(workload, spec)
        _mount_everywhere(spec)
    return added


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
