"""Denial explanations over kata's denied cases: a field is named, no env value is ever printed."""

from __future__ import annotations

from kata_testdata import POLICIES, case_dirs, load_cases

from guest.cli import canonical_input
from guest.explain import Explainer, failed_bodies
from guest.policy.engine import AgentPolicy
from guest.policy.errors import PolicyInternalError


def test_failed_bodies_from_prints() -> None:
    lines = [
        "f:1: ExecProcessRequest 1: input = {}",
        "f:2: allow_env: p = x",
        "f:3: ExecProcessRequest 2: input = {}",
        "f:4: ExecProcessRequest 2: true",
        "f:5: allow_user: true",
    ]
    assert failed_bodies("ExecProcessRequest", lines) == ["ExecProcessRequest 1", "allow_env"]


def test_explanations_name_a_field_for_denied_create_container_cases() -> None:
    explained = denied = 0
    for directory in case_dirs():
        policy = AgentPolicy()
        policy.initialize(POLICIES / directory / "policy.rego")
        explainer = Explainer(policy.policy_data)
        for case in load_cases(directory):
            request = canonical_input(case["kind"], case["request"])
            try:
                decision = policy.evaluate(case["kind"], request)
            except PolicyInternalError:
                continue
            if decision.allowed or case["kind"] != "CreateContainerRequest":
                continue
            denied += 1
            reasons = explainer(case["kind"], request, decision.print_lines)
            assert any(r.startswith("rule body failed: ") for r in reasons), reasons
            text = " ".join(reasons)
            for var in ((request.get("OCI") or {}).get("Process") or {}).get("Env") or []:
                value = var.partition("=")[2]
                if len(value) > 3:
                    assert value not in text, f"env value leaked: {var.partition('=')[0]}"
            if any(r.startswith("containers[") for r in reasons):
                explained += 1
    assert denied >= 14
    assert explained >= denied - 3


def test_exec_process_explanations() -> None:
    directory = "state/execprocessdeployment"
    policy = AgentPolicy()
    policy.initialize(POLICIES / directory / "policy.rego")
    explainer = Explainer(policy.policy_data, lambda: policy.state)
    create, execp = load_cases(directory)
    exec_input = canonical_input("ExecProcessRequest", execp["request"])
    decision = policy.evaluate("ExecProcessRequest", exec_input)
    assert not decision.allowed  # its container was never created
    reasons = explainer("ExecProcessRequest", exec_input, decision.print_lines)
    assert any("not in the policy state" in r for r in reasons), reasons
    created = canonical_input(create["kind"], create["request"])
    assert policy.evaluate("CreateContainerRequest", created).allowed
    bad = dict(exec_input, process=dict(exec_input["process"], Args=["/bin/sh", "-c", "cat /secret"]))
    decision = policy.evaluate("ExecProcessRequest", bad)
    assert not decision.allowed
    reasons = explainer("ExecProcessRequest", bad, decision.print_lines)
    assert any(r.startswith("process.Args: got ['/bin/sh', '-c', 'cat /secret']") for r in reasons), reasons
