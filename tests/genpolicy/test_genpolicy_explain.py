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
