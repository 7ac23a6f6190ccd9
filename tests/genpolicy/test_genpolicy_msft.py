"""The generator against six real genpolicy outputs (Microsoft's AKS fork, 2025-12, older rules).

Every field of ``policy_data.containers`` that does not depend on image bytes is compared. Where the
older genpolicy and ours (today's upstream behaviour) differ on purpose, the difference is listed in
``KNOWN_DIFFERENCES`` with its reason and normalised on both sides; anything else fails the test.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genpolicy import Generator, Settings, StaticImageSource, parse_documents
from tests.support import shared_path

HERE = Path(__file__).resolve().parent
KATA_POLICY = shared_path("kata-policy")
MSFT = KATA_POLICY / "msft-samples"
SAMPLES = [
    "deployment-busybox",
    "pod-exec",
    "pod-lifecycle",
    "pod-one-container",
    "pod-three-containers",
    "web",
]

Container = dict[str, Any]


def _drop(container: Container, *path: str) -> None:
    node = container
    for key in path[:-1]:
        node = node.get(key, {})
    node.pop(path[-1], None)


def _set_ours(field: str, value: Callable[[Container], Any]) -> Callable[[Container, Container], None]:
    def apply(ours: Container, theirs: Container) -> None:
        path = field.split(".")
        node = theirs
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(ours)

    return apply


def _get(container: Container, field: str) -> Any:
    node: Any = container
    for key in field.split("."):
        node = node[key]
    return node


def _exec_strings(ours: Container, theirs: Container) -> None:
    ours["exec_commands"] = [" ".join(c) for c in ours["exec_commands"]]


def _without_new_fields(ours: Container, theirs: Container) -> None:
    for path in (
        ("OCI", "Linux", "Devices"),
        ("OCI", "Linux", "Sysctl"),
        ("devices",),
        ("runtime_anno_patterns",),
    ):
        _drop(ours, *path)


def _unanchored_names(ours: Container, theirs: Container) -> None:
    for c in (ours, theirs):
        c["OCI"]["Annotations"].pop("io.kubernetes.cri.sandbox-name", None)
        c["OCI"]["Annotations"].pop("io.kubernetes.cri.sandbox-namespace", None)


def _namespace_env(ours: Container, theirs: Container) -> None:
    env = theirs["OCI"]["Process"].get("Env", [])
    theirs["OCI"]["Process"]["Env"] = [
        e.replace("POD_NAMESPACE=default", "POD_NAMESPACE=$(sandbox-namespace)") for e in env
    ]


def _pvc_source(ours: Container, theirs: Container) -> None:
    for mount in ours["OCI"].get("Mounts", []):
        mount["source"] = re.sub(
            r"^\^/run/kata-containers/shared/containers/\$\(bundle-id\)-\[a-z0-9\]\{16\}-",
            "$(sfprefix)",
            mount["source"],
        )


def _pause_sysfs(ours: Container, theirs: Container) -> None:
    if ours["OCI"]["Annotations"].get("io.kubernetes.cri.container-type") != "sandbox":
        return
    for mount in ours["OCI"].get("Mounts", []):
        if mount["destination"] == "/sys":
            mount["options"] = [o if o != "rw" else "ro" for o in mount["options"]]


KNOWN_DIFFERENCES: list[tuple[str, Callable[[Container, Container], None]]] = [
    (
        "OCI.Version: the older settings pinned OCI 1.1.0-rc.1; today's kata_config says 1.1.0",
        _set_ours("OCI.Version", lambda o: _get(o, "OCI.Version")),
    ),
    (
        "OCI.Root.Path: the AKS fork shares the rootfs from the host ($(cpath)/$(bundle-id)); guest pull "
        "and host EROFS mount it at $(root_path)",
        _set_ours("OCI.Root.Path", lambda o: _get(o, "OCI.Root.Path")),
    ),
    (
        "storages: the AKS fork's tarfs layer storages (tardev-snapshotter, removed upstream in 2025)",
        _set_ours("storages", lambda o: o["storages"]),
    ),
    ("exec_commands: older rules list each command as one joined string", _exec_strings),
    (
        "Linux.Devices, Linux.Sysctl, devices, runtime_anno_patterns: fields added to genpolicy later",
        _without_new_fields,
    ),
    (
        "sandbox-name / sandbox-namespace: today anchored regexes per controller and the pod's own "
        "namespace; the older tool wrote the bare name and a default_namespace setting",
        _unanchored_names,
    ),
    (
        "POD_NAMESPACE from metadata.namespace: $(sandbox-namespace) today, "
        "the default_namespace setting then",
        _namespace_env,
    ),
    ("StatefulSet claim mounts: today's genpolicy writes the expanded shared-dir regex", _pvc_source),
    ("pause /sys: today rw when another container of the pod is privileged", _pause_sysfs),
]


def image_independent(container: Container, yaml_env_names: set[str]) -> Container:
    """Drop what comes from image bytes: the user, image env, the image's args and cwd."""
    out = copy.deepcopy(container)
    out.pop("yaml", None)  # ours only: where in the YAML the container came from (for explanations)
    process = out["OCI"]["Process"]
    process.pop("User", None)
    process.pop("Cwd", None)
    process["Env"] = [
        e for e in process.get("Env", []) if e.split("=", 1)[0] in yaml_env_names | {"HOSTNAME"}
    ]
    return out


def yaml_facts(doc: dict[str, Any]) -> list[tuple[set[str], bool]]:
    """Per policy container (pause first, init containers reversed): YAML env names, has command."""
    spec = doc["spec"]["template"]["spec"] if "template" in doc.get("spec", {}) else doc["spec"]
    ordered = [{}] + list(reversed(spec.get("initContainers") or [])) + spec["containers"]
    return [({e["name"] for e in c.get("env") or []}, "command" in c) for c in ordered]


@pytest.mark.parametrize("sample", SAMPLES)
def test_msft_sample_matches_real_genpolicy(sample: str) -> None:
    settings = Settings.load(KATA_POLICY / "kata" / "genpolicy-settings.json")
    images = StaticImageSource.load(HERE / "images.json")
    generator = Generator(
        settings, (KATA_POLICY / "kata" / "rules.rego").read_text(), images, require_digest=False
    )
    docs = parse_documents((MSFT / f"{sample}.yaml").read_text(), sample)
    (result,) = generator.generate(docs)
    text = (MSFT / f"{sample}.policy.rego").read_text()
    theirs_all = json.loads(text[text.index("policy_data := ") + len("policy_data := ") :])["containers"]
    ours_all = result.policy_data["containers"]
    assert len(ours_all) == len(theirs_all)
    facts = yaml_facts(docs.workloads[0].doc)
    for index, (ours, theirs) in enumerate(zip(ours_all, theirs_all, strict=True)):
        env_names, has_command = facts[index]
        ours, theirs = image_independent(ours, env_names), image_independent(theirs, env_names)
        if not has_command:
            ours["OCI"]["Process"].pop("Args", None)
            theirs["OCI"]["Process"].pop("Args", None)
        for _reason, normalise in KNOWN_DIFFERENCES:
            normalise(ours, theirs)
        assert ours == theirs, f"{sample} container {index}"


def test_known_differences_are_needed() -> None:
    """Every listed difference really occurs in at least one sample (the table cannot go stale)."""
    settings = Settings.load(KATA_POLICY / "kata" / "genpolicy-settings.json")
    images = StaticImageSource.load(HERE / "images.json")
    generator = Generator(
        settings, (KATA_POLICY / "kata" / "rules.rego").read_text(), images, require_digest=False
    )
    used = set()
    for sample in SAMPLES:
        (result,) = generator.generate(parse_documents((MSFT / f"{sample}.yaml").read_text(), sample))
        text = (MSFT / f"{sample}.policy.rego").read_text()
        theirs_all = json.loads(text[text.index("policy_data := ") + len("policy_data := ") :])["containers"]
        for ours, theirs in zip(result.policy_data["containers"], theirs_all, strict=True):
            for reason, normalise in KNOWN_DIFFERENCES:
                a, b = copy.deepcopy(ours), copy.deepcopy(theirs)
                before = (json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True))
                normalise(a, b)
                if (json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)) != before:
                    used.add(reason)
    assert used == {reason for reason, _ in KNOWN_DIFFERENCES}
