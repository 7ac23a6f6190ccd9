"""Denials of generated policies are explained in the YAML's words: which field would have to change."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_genpolicy_kata import CASES, case_dirs, decide, generate_for

from guest.cli import canonical_input
from guest.explain import Explainer
from guest.policy.engine import AgentPolicy


def explained_denials(directory: str) -> list[tuple[dict[str, Any], list[str]]]:
    policy = AgentPolicy()
    policy.set_policy(generate_for(directory))
    explainer = Explainer(policy.policy_data, lambda: policy.state)
    out = []
    cases = json.loads((CASES / directory / "testcases.json").read_text())
    execs = [c for c in cases if c["kind"] == "ExecProcessRequest"]
    if execs:  # the host runs a command that no probe or hook declares
        evil = json.loads(json.dumps(execs[0]))
        evil["request"]["process"]["Args"] = ["/bin/sh", "-c", "cat /contrast/secret"]
        cases.append(evil)
    for case in cases:
        if not decide(policy, case) and case["kind"] in ("CreateContainerRequest", "ExecProcessRequest"):
            out.append((case, explainer(case["kind"], canonical_input(case["kind"], case["request"]))))
    return out


@pytest.mark.parametrize(
    ("directory", "field"),
    [
        ("createcontainer/env_vars", "spec.containers[0].env / envFrom"),
        ("createcontainer/generate_name", "Pod/dummy metadata.name"),
        ("createcontainer/sysctls", "spec.securityContext.sysctls"),
        ("state/execprocessdeployment", "livenessProbe, readinessProbe, startupProbe or lifecycle hook"),
    ],
)
def test_denial_names_the_yaml_field(directory: str, field: str) -> None:
    denials = explained_denials(directory)
    assert denials
    hints = [r for _, reasons in denials for r in reasons if r.startswith("YAML: ")]
    assert any(field in h for h in hints), hints


def test_most_kata_denials_get_a_yaml_hint() -> None:
    """A hint appears for a denial that concerns a container field; count how many of kata's do."""
    total = hinted = 0
    for directory in case_dirs():
        for _case, reasons in explained_denials(directory):
            total += 1
            hinted += any(r.startswith("YAML: ") for r in reasons)
    assert total >= 15 and hinted >= total * 3 // 4, (hinted, total)


def _allowed_workload_create(directory: str) -> tuple[AgentPolicy, Explainer, dict[str, Any]]:
    """An engine that decided kata's cases up to the first allowed workload CreateContainer; that one."""
    policy = AgentPolicy()
    policy.set_policy(generate_for(directory))
    for case in json.loads((CASES / directory / "testcases.json").read_text()):
        allowed = decide(policy, case)
        anno = ((case["request"].get("OCI") or {}).get("Annotations")) or {}
        if (
            allowed
            and case["kind"] == "CreateContainerRequest"
            and anno.get("io.kubernetes.cri.container-type") == "container"
        ):
            req = canonical_input(case["kind"], json.loads(json.dumps(case["request"])))
            return policy, Explainer(policy.policy_data, lambda: policy.state), req
    raise AssertionError(f"no allowed workload CreateContainer in {directory}")


def test_explanations_follow_the_rules_for_caps_env_regexes_and_image_storages() -> None:
    """Capabilities (with the $(default_caps) shorthand), the env regexes' placeholders and host-EROFS
    layer storages are compared as rules.rego compares them: a privileged container's capabilities are
    named; a service-link variable and an erofs layer are not reported as differences."""
    _policy, explainer, req = _allowed_workload_create("createcontainer/env_vars")
    caps = req["OCI"]["Process"]["Capabilities"]
    privileged = json.loads(json.dumps(req))
    privileged["OCI"]["Process"]["Capabilities"] = {
        k: [*v, "CAP_SYS_ADMIN"] if k != "Ambient" else v for k, v in caps.items()
    }
    reasons = explainer("CreateContainerRequest", privileged, ())
    assert any("Capabilities.Bounding" in r and "SYS_ADMIN" in r for r in reasons), reasons
    assert any(r.startswith("YAML:") and "securityContext.capabilities / privileged" in r for r in reasons)
    noise = json.loads(json.dumps(privileged))
    noise["OCI"]["Process"]["Env"].append("KUBERNETES_SERVICE_HOST=10.96.0.1")
    noise["storages"].append(
        {
            "driver": "erofs.multi-layer",
            "driver_options": [],
            "source": "/dev/vdc",
            "fstype": "erofs",
            "options": ["X-kata.dmverity-enabled=true"],
            "mount_point": "/x",
            "fs_group": None,
            "shared": False,
        }
    )
    reasons = explainer("CreateContainerRequest", noise, ())
    assert not any("KUBERNETES_SERVICE_HOST" in r or ".storages" in r for r in reasons), reasons
    assert any("Capabilities.Bounding" in r for r in reasons), reasons
