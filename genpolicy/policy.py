"""From Kubernetes documents to policies: one ``policy_data`` per workload, the rules text in front,
wrapped into Kata's initdata and written back as the pod-template annotation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attestation import initdata as initdata_format
from guest.storage import IMAGE_STORE_ANNOTATION, image_store_storage

from .container import PodContainer, container_policy, pod_containers
from .env import EnvContext
from .errors import ImageError
from .images import ImageInfo, ImageSource
from .resources import Documents, Workload
from .rules import with_erofs_layers, with_guest_pull, with_rootfs_propagation
from .settings import Settings, storage_fields

POLICY_FILE = "policy.rego"
_PINNED = re.compile(r"@(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


@dataclass(frozen=True)
class ContainerSummary:
    """What a generated policy allows for one container, in the words of its YAML."""

    name: str
    where: str
    image: str
    image_digest: str
    args: list[str]
    env_names: list[str]
    mounts: list[str]
    exec_commands: list[list[str]]


@dataclass
class WorkloadPolicy:
    workload: Workload
    policy_data: dict[str, Any]
    rego: str
    initdata: bytes  # the TOML document (its digest goes into HOST_DATA / MRCONFIGID)
    annotation: str
    containers: list[ContainerSummary] = field(default_factory=list)
    secret_env: bool = False  # some env value came from a Secret (it is now in the policy text)


def render_policy(rules: str, policy_data: Mapping[str, Any]) -> str:
    """genpolicy's layout: the rules text, then ``policy_data := <pretty JSON>``."""
    return f"{rules}\npolicy_data := {json.dumps(policy_data, indent=2, ensure_ascii=False)}"


def _initdata(rego: str, extra: Mapping[str, str], algorithm: str) -> bytes:
    data = dict(extra)
    data[POLICY_FILE] = rego
    return initdata_format.encode(initdata_format.Initdata(version="0.1.0", algorithm=algorithm, data=data))


class Generator:
    def __init__(
        self,
        settings: Settings,
        rules: str,
        images: ImageSource,
        *,
        extra_initdata: Mapping[str, str] | None = None,
        algorithm: str = "sha256",
        require_digest: bool = True,
    ) -> None:
        self.settings = settings
        # Pinned guest pull: the rules must also check that the guest pulls the pinned digest, and
        # host EROFS layers that the layers are the pinned ones; genpolicy's rules do neither.
        if require_digest and settings.guest_pull:
            rules = with_guest_pull(rules)
        if settings.host_erofs:
            rules = with_erofs_layers(rules)
        rules = with_rootfs_propagation(rules)
        self.rules = rules
        self.images = images
        self.extra_initdata = dict(extra_initdata or {})
        self.algorithm = algorithm
        self.require_digest = require_digest

    def _image(self, workload: Workload, container: PodContainer) -> ImageInfo:
        if self.require_digest and self.settings.guest_pull and not container.is_pause:
            _require_digest(workload, container)
        try:
            return self.images.resolve(container.image)
        except ImageError as exc:
            raise ImageError(
                workload.label, f"{container.where}.image", f"{container.image}: {exc.problem}", exc.expected
            ) from exc

    def workload_policy(
        self, docs: Documents, workload: Workload, extra: Mapping[str, str] | None = None
    ) -> WorkloadPolicy:
        pause_image = str(self.settings.cluster_config["pause_container_image"])
        containers = pod_containers(workload, pause_image)
        spec = workload.pod_spec
        any_privileged = any(
            (c.spec.get("securityContext") or {}).get("privileged") is True for c in containers[1:]
        )
        env_ctx = EnvContext(
            resource=workload.label,
            namespace=workload.namespace,
            service_account=str(spec.get("serviceAccountName") or "default"),
            annotations=workload.pod_metadata.get("annotations") or {},
            labels=workload.pod_metadata.get("labels") or {},
            config_maps=docs.config_maps,
            secrets=docs.secrets,
        )
        entries = []
        summaries = []
        for container in containers:
            image = self._image(workload, container)
            entry = container_policy(self.settings, workload, container, image, env_ctx, any_privileged)
            entries.append(entry)
            if not container.is_pause:
                summaries.append(_summary(container, image, entry))
        sections = self.settings.policy_sections()
        store = str((workload.pod_metadata.get("annotations") or {}).get(IMAGE_STORE_ANNOTATION, "0"))
        if store not in ("", "0"):
            # the pod asked for the secure image store: the policy pins the encrypted storage exactly,
            # so a host that sends it without the ephemeral key (or at another place) is denied
            sections["sandbox"]["storages"].append(storage_fields(image_store_storage()))
        policy_data: dict[str, Any] = {"containers": entries, **sections}
        rego = render_policy(self.rules, policy_data)
        raw = _initdata(rego, {**self.extra_initdata, **(extra or {})}, self.algorithm)
        annotation = initdata_format.encode_annotation(raw)
        return WorkloadPolicy(workload, policy_data, rego, raw, annotation, summaries, env_ctx.used_secret)

    def generate(
        self,
        docs: Documents,
        runtime_classes: Sequence[str] = (),
        extra_for: Callable[[Workload], Mapping[str, str]] | None = None,
    ) -> list[WorkloadPolicy]:
        """Policies for every workload (whose runtime class starts with one of ``runtime_classes``, if
        given); each workload's pod template gets the initdata annotation."""
        out = []
        for workload in docs.workloads:
            if runtime_classes and not any(workload.runtime_class.startswith(p) for p in runtime_classes):
                continue
            result = self.workload_policy(docs, workload, extra_for(workload) if extra_for else None)
            workload.set_initdata_annotation(result.annotation)
            out.append(result)
        return out


def _summary(container: PodContainer, image: ImageInfo, entry: Mapping[str, Any]) -> ContainerSummary:
    process = entry["OCI"]["Process"]
    return ContainerSummary(
        name=container.name,
        where=container.where,
        image=container.image,
        image_digest=image.digest,
        args=list(process.get("Args", [])),
        env_names=[e.split("=", 1)[0] for e in process.get("Env", [])],
        mounts=[m["destination"] for m in entry["OCI"].get("Mounts", [])],
        exec_commands=list(entry["exec_commands"]),
    )


def _require_digest(workload: Workload, container: PodContainer) -> None:
    """Under guest pull the policy pins what the guest pulls: only a digest names one image."""
    if not _PINNED.search(container.image):
        raise ImageError(
            workload.label,
            f"{container.where}.image",
            f"{container.image!r} has no digest",
            "an image reference pinned by digest, e.g. name@sha256:<64 hex digits>",
        )
