"""Kubernetes resources as genpolicy sees them: which kinds get a policy, their pod template, the pod
names the controller will create, and where the initdata annotation goes.

Documents are parsed with PyYAML's safe loader; a ``List`` contributes its items. Kinds genpolicy
accepts without a policy pass through unchanged; any other kind is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import GenerateError

INITDATA_ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
# Kubernetes' generateName alphabet (consonants and digits without look-alikes).
GENERATE_NAME_SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]+"

# kind -> path (keys) from the document to the pod template ({metadata, spec}); () for a Pod itself.
POLICY_KINDS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
CONFIG_KINDS = frozenset({"ConfigMap", "Secret"})
PASSTHROUGH_KINDS = frozenset(
    {
        "ClusterRole",
        "ClusterRoleBinding",
        "LimitRange",
        "Namespace",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "PriorityClass",
        "ResourceQuota",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "RuntimeClass",
    }
)


def _name_prefix(metadata: Mapping[str, Any]) -> str | None:
    """The pod-name regex stem from ``name`` (verbatim, as genpolicy) or ``generateName`` (escaped)."""
    name = metadata.get("name")
    if isinstance(name, str):
        return name
    generate = metadata.get("generateName")
    if isinstance(generate, str):
        return re.escape(generate) + GENERATE_NAME_SUFFIX
    return None


def _job_pod_name(job_name: str) -> str:
    return f"{job_name}(-[0-9]+)?-{GENERATE_NAME_SUFFIX}"


def sandbox_name_regex(kind: str, metadata: Mapping[str, Any]) -> str | None:
    """What the controller of ``kind`` names its pods (without anchors)."""
    stem = _name_prefix(metadata)
    if stem is None:
        return None
    if kind == "Pod":
        return stem
    if kind == "Deployment":
        return f"{stem}-{GENERATE_NAME_SUFFIX}-{GENERATE_NAME_SUFFIX}"
    if kind in ("ReplicaSet", "ReplicationController", "DaemonSet"):
        return f"{stem}-{GENERATE_NAME_SUFFIX}"
    if kind == "StatefulSet":
        return f"{stem}-[0-9]+"
    if kind == "Job":
        return _job_pod_name(stem)
    if kind == "CronJob":
        return _job_pod_name(f"{stem}-[0-9]+")
    raise AssertionError(kind)


@dataclass
class Workload:
    """One resource that gets a policy: its document (mutated when the annotation is written)."""

    kind: str
    doc: dict[str, Any]
    index: int  # position among the input documents

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.doc.get("metadata") or {}
        return meta if isinstance(meta, dict) else {}

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.metadata.get('name') or self.metadata.get('generateName') or '?'}"

    @property
    def template_path(self) -> str:
        return ".".join(POLICY_KINDS[self.kind])

    def template(self) -> dict[str, Any]:
        node: Any = self.doc
        for key in POLICY_KINDS[self.kind]:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                raise GenerateError(
                    self.label, ".".join(POLICY_KINDS[self.kind]), "missing", "a pod template"
                )
        if not isinstance(node, dict):
            raise GenerateError(self.label, self.template_path, f"got {type(node).__name__}", "a mapping")
        return node

    @property
    def pod_metadata(self) -> dict[str, Any]:
        meta = self.template().get("metadata") or {}
        return meta if isinstance(meta, dict) else {}

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec = self.template().get("spec")
        if not isinstance(spec, dict):
            prefix = self.template_path + "." if self.template_path else ""
            raise GenerateError(self.label, prefix + "spec", "missing or not a mapping", "a pod spec")
        return spec

    def field_path(self, suffix: str) -> str:
        """The YAML path of a pod-spec field, for errors and explanations."""
        prefix = self.template_path + "." if self.template_path else ""
        return f"{prefix}spec.{suffix}"

    @property
    def namespace(self) -> str:
        ns = self.metadata.get("namespace")
        return ns if isinstance(ns, str) else ""

    @property
    def sandbox_name(self) -> str | None:
        return sandbox_name_regex(self.kind, self.metadata)

    @property
    def runtime_class(self) -> str:
        value = self.pod_spec.get("runtimeClassName")
        return value if isinstance(value, str) else ""

    def set_initdata_annotation(self, value: str) -> None:
        template = self.template()
        meta = template.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
            template["metadata"] = meta
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict):
            annotations = {}
            meta["annotations"] = annotations
        annotations[INITDATA_ANNOTATION] = value


@dataclass
class Documents:
    """All input documents in order, the workloads among them and the config they reference."""

    docs: list[Any]
    workloads: list[Workload] = field(default_factory=list)
    config_maps: list[Mapping[str, Any]] = field(default_factory=list)
    secrets: list[Mapping[str, Any]] = field(default_factory=list)

    def dump(self) -> str:
        """The documents as YAML again (deterministic: key order kept, no flow style)."""
        return yaml.safe_dump_all(self.docs, sort_keys=False, default_flow_style=False, width=1 << 30)


def _items(doc: Any, source: str, position: str) -> Iterator[tuple[dict[str, Any], str]]:
    if not isinstance(doc, dict):
        raise GenerateError(source, position, f"got {type(doc).__name__}", "a Kubernetes object (mapping)")
    if doc.get("kind") == "List":
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise GenerateError(source, f"{position}.items", "not a list", "a list of objects")
        for i, item in enumerate(items):
            yield from _items(item, source, f"{position}.items[{i}]")
        return
    yield doc, position


def parse_documents(text: str, source: str = "<yaml>") -> Documents:
    """Parse a multi-document YAML stream; classify every object by kind."""
    try:
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise GenerateError(source, "(document)", f"not valid YAML: {exc}") from exc
    result = Documents(docs=loaded)
    for index, doc in enumerate(loaded):
        for obj, position in _items(doc, source, f"document {index}"):
            kind = obj.get("kind")
            if not isinstance(kind, str):
                raise GenerateError(source, f"{position}.kind", "missing", "a Kubernetes kind")
            if kind in POLICY_KINDS:
                result.workloads.append(Workload(kind=kind, doc=obj, index=index))
            elif kind == "ConfigMap":
                result.config_maps.append(obj)
            elif kind == "Secret":
                result.secrets.append(obj)
            elif kind not in PASSTHROUGH_KINDS:
                raise GenerateError(
                    source,
                    f"{position}.kind",
                    f"unsupported kind {kind!r}",
                    "a workload, ConfigMap, Secret or a kind that needs no policy",
                )
    return result
