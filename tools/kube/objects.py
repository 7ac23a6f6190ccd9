"""Kubernetes objects as the API server hands them to a kubelet: the pods a workload's controller
creates (names, labels, uid) with the API server's defaulting and the service-account admission
applied, and the ConfigMaps and Secrets of the same files for the volumes and env they feed."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import KubeObjectError

__all__ = ["PodPlan", "load_objects", "pod_templates"]

# Kubernetes' rand.String / SafeEncodeString alphabet (no vowels, no look-alikes).
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TEMPLATE_KINDS = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
}


@dataclass
class PodPlan:
    """One pod to run: what the API server would store for it, plus the config data it references."""

    name: str
    namespace: str
    uid: str
    kind: str  # the workload's kind (Pod, Deployment, ...)
    workload: str  # the workload's name
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: dict[str, Any]
    config_maps: dict[str, dict[str, bytes]] = field(default_factory=dict)
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def host_network(self) -> bool:
        return self.spec.get("hostNetwork") is True

    def containers(self, kind: str = "containers") -> list[dict[str, Any]]:
        return list(self.spec.get(kind) or [])


def load_objects(paths: Iterable[Path | str]) -> list[dict[str, Any]]:
    """Every object of the YAML files (multi-document, ``List`` items flattened), in order."""
    out: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise KubeObjectError(str(path), "(yaml)", str(exc)[:200], "valid YAML") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise KubeObjectError(str(path), f"document {i}", type(doc).__name__, "a mapping")
            if doc.get("kind") == "List":
                out.extend(item for item in doc.get("items") or [] if isinstance(item, dict))
            else:
                out.append(doc)
    return out


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        raise KubeObjectError(str(obj.get("kind")), "metadata", type(meta).__name__, "a mapping")
    return meta


def _decode(kind: str, name: str, key: str, value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeObjectError(f"{kind}/{name}", f"data.{key}", "not base64", "base64 data") from None


def _config_data(objects: list[dict[str, Any]], namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    config_maps: dict[str, dict[str, bytes]] = {}
    secrets: dict[str, dict[str, bytes]] = {}
    for obj in objects:
        meta = _meta(obj)
        if (meta.get("namespace") or "default") != namespace:
            continue
        name = str(meta.get("name", ""))
        if obj.get("kind") == "ConfigMap":
            data = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()}
            for k, v in (obj.get("binaryData") or {}).items():
                data[str(k)] = _decode("ConfigMap", name, str(k), v)
            config_maps[name] = data
        elif obj.get("kind") == "Secret":
            data = {str(k): _decode("Secret", name, str(k), v) for k, v in (obj.get("data") or {}).items()}
            for k, v in (obj.get("stringData") or {}).items():
                data[str(k)] = str(v).encode()
            secrets[name] = data
    return config_maps, secrets


def _safe_encode(text: str) -> str:
    return "".join(ALPHABET[b % len(ALPHABET)] for b in text.encode())


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _random_suffix(seed: str, n: int = 5) -> str:
    """A 5-character generateName suffix, stable for the same seed (so reruns name pods alike)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:n])


def _default_container(c: dict[str, Any]) -> None:
    """The API server's defaults for a container (those kubelet acts on)."""
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image", ""))
    last = image.rsplit("/", 1)[-1]
    untagged = "@" not in image and ":" not in last
    c.setdefault("imagePullPolicy", "Always" if untagged or last.endswith(":latest") else "IfNotPresent")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            p.setdefault("periodSeconds", 10)
            p.setdefault("timeoutSeconds", 1)
            p.setdefault("successThreshold", 1)
            p.setdefault("failureThreshold", 3)
            p.setdefault("initialDelaySeconds", 0)


def _admit(pod: dict[str, Any], name: str, namespace: str) -> None:
    """API server defaulting and the ServiceAccount admission plugin's token volume."""
    spec = pod["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("enableServiceLinks", True)
    all_containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for c in all_containers:
        if not isinstance(c, dict):
            raise KubeObjectError(f"Pod/{name}", "spec.containers", type(c).__name__, "a mapping")
        _default_container(c)
    if spec.get("automountServiceAccountToken") is False:
        return
    volume = f"kube-api-access-{_random_suffix(namespace + '/' + name + '/sa')}"
    spec.setdefault("volumes", []).append(
        {
            "name": volume,
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        }
    )
    for c in all_containers:
        mounts = c.setdefault("volumeMounts", [])
        if any(m.get("mountPath") == SERVICE_ACCOUNT_DIR for m in mounts):
            continue
        mounts.append({"name": volume, "readOnly": True, "mountPath": SERVICE_ACCOUNT_DIR})


def _plan(
    kind: str,
    workload: str,
    name: str,
    namespace: str,
    template: Mapping[str, Any],
    extra_labels: Mapping[str, str],
    objects: list[dict[str, Any]],
) -> PodPlan:
    pod = copy.deepcopy(dict(template))
    meta = dict(pod.get("metadata") or {})
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise KubeObjectError(f"{kind}/{workload}", "spec (pod template)", type(spec).__name__, "a mapping")
    pod["spec"] = spec
    _admit(pod, name, namespace)
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update(extra_labels)
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    config_maps, secrets = _config_data(objects, namespace)
    # The root CA ConfigMap every namespace has (kube-controller-manager publishes it).
    config_maps.setdefault("kube-root-ca.crt", {"ca.crt": b"# cluster CA of the tools.kube driver\n"})
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tools.kube/{namespace}/{name}"))
    return PodPlan(name, namespace, uid, kind, workload, labels, annotations, spec, config_maps, secrets)


def pod_templates(objects: list[dict[str, Any]]) -> list[PodPlan]:
    """The pods the objects' controllers would create, in document order: a Pod as is; a Deployment
    ``replicas`` pods named ``<name>-<pod-template-hash>-<5 chars>``; a ReplicaSet/DaemonSet
    ``<name>-<5 chars>``; a StatefulSet ``<name>-0`` … ``<name>-<replicas-1>``; a Job ``<name>-<5>``."""
    plans: list[PodPlan] = []
    for obj in objects:
        kind = str(obj.get("kind", ""))
        meta = _meta(obj)
        workload = str(meta.get("name", ""))
        namespace = str(meta.get("namespace") or "default")
        if kind == "Pod":
            if not workload:
                raise KubeObjectError("Pod", "metadata.name", "missing", "a pod name")
            plans.append(_plan(kind, workload, workload, namespace, obj, {}, objects))
            continue
        keys = TEMPLATE_KINDS.get(kind)
        if keys is None:
            continue
        template: Any = obj
        for key in keys:
            template = (template or {}).get(key)
        if not isinstance(template, dict):
            raise KubeObjectError(f"{kind}/{workload}", ".".join(keys), "missing", "a pod template")
        spec = obj.get("spec") or {}
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            raise KubeObjectError(f"{kind}/{workload}", "spec.replicas", repr(replicas), "an integer >= 0")
        if kind in ("DaemonSet", "Job"):
            replicas = 1
        for i in range(replicas):
            labels: dict[str, str] = {}
            if kind == "Deployment":
                text = json.dumps(template, sort_keys=True, separators=(",", ":"))
                template_hash = _safe_encode(str(_fnv32a(text.encode())))
                labels["pod-template-hash"] = template_hash
                name = f"{workload}-{template_hash}-{_random_suffix(f'{namespace}/{workload}/{i}')}"
            elif kind == "StatefulSet":
                name = f"{workload}-{i}"
                labels["statefulset.kubernetes.io/pod-name"] = name
                labels["apps.kubernetes.io/pod-index"] = str(i)
            else:
                name = f"{workload}-{_random_suffix(f'{namespace}/{workload}/{i}')}"
            plan = _plan(kind, workload, name, namespace, template, labels, objects)
            if kind == "StatefulSet":
                plan.spec.setdefault("hostname", name)
                if spec.get("serviceName"):
                    plan.spec.setdefault("subdomain", str(spec["serviceName"]))
            plans.append(plan)
    return plans
