"""The guest-pull rule through guest.policy: kata's rules.rego patched by oci.policy pins the image.

Each tampering below is ALLOWED by genpolicy's upstream rules (asserted, so the test shows what the
patch adds) and DENIED by the patched rules. kata's own test cases keep their decisions, except the
ones whose image is referenced by tag, which the patched rules deny by design (table below).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from guest.policy.engine import AgentPolicy
from guest.policy.input import from_policy_json, to_policy_json
from guest.protocols import agent_pb2
from oci.policy import PatchError, patch_rules, rule_module
from tests.support import shared_path

SHARED = shared_path("kata-policy")
KATA = SHARED / "kata" / "tests" / "policy" / "testdata"
POLICIES = SHARED / "policies"
RULES = (SHARED / "kata" / "rules.rego").read_text()
MARK = "\npolicy_data := "
OTHER = "sha256:" + "1" * 64
IMAGE_KEY = "io.kubernetes.cri.image-name"

pytestmark = pytest.mark.skipif(not KATA.is_dir(), reason="kata policy test data not present")

DIGEST = re.compile(r"@(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


def changed_by_design(request: dict[str, Any]) -> str | None:
    """Why the patched rules must deny a case upstream allows, or None if they must agree."""
    annotations = request.get("OCI", {}).get("Annotations", {})
    if annotations.get("io.kubernetes.cri.container-type") == "sandbox":
        return None
    pulls = [s for s in request.get("storages", []) if s.get("driver") == "image_guest_pull"]
    if not pulls:
        return "workload without an image_guest_pull storage (the rootfs would be host-chosen)"
    if not DIGEST.search(pulls[0].get("source", "")):
        return "image referenced by tag only (nothing pins its content)"
    return None


def _policy(directory: str, patched: bool,
            edit: Callable[[dict[str, Any]], None] | None = None) -> AgentPolicy:
    text = (POLICIES / directory / "policy.rego").read_text()
    rules_end = text.index(MARK)
    data = json.loads(text[rules_end + len(MARK):])
    if edit is not None:
        edit(data)
    rules = patch_rules(RULES) if patched else RULES
    assert text[:rules_end].strip() == RULES.strip()
    policy = AgentPolicy()
    policy.set_policy(rules + MARK + json.dumps(data))
    return policy


def _input(request: dict[str, Any]) -> dict[str, Any]:
    return to_policy_json(from_policy_json(agent_pb2.CreateContainerRequest, request))


def _gid_request() -> dict[str, Any]:
    cases = json.loads((KATA / "createcontainer/gid/testcases.json").read_text())
    allowed = [c for c in cases if c["allowed"] and c["kind"] == "CreateContainerRequest"]
    return copy.deepcopy(allowed[0]["request"])


def _meta(req: dict[str, Any]) -> dict[str, Any]:
    opt = req["storages"][0]["driver_options"][0]
    return json.loads(opt[len("image_guest_pull="):])["metadata"]  # type: ignore[no-any-return]


def _set_meta(req: dict[str, Any], meta: dict[str, Any]) -> None:
    req["storages"][0]["driver_options"] = [f"image_guest_pull={json.dumps({'metadata': meta})}"]


def _swap_digest(value: str) -> str:
    return value.split("@")[0] + "@" + OTHER


def t_source(req: dict[str, Any]) -> None:
    req["storages"][0]["source"] = _swap_digest(req["storages"][0]["source"])


def t_source_tag(req: dict[str, Any]) -> None:
    req["storages"][0]["source"] = req["storages"][0]["source"].split("@")[0] + ":latest"


def t_annotation(req: dict[str, Any]) -> None:
    req["OCI"]["Annotations"][IMAGE_KEY] = _swap_digest(req["OCI"]["Annotations"][IMAGE_KEY])


def t_metadata(req: dict[str, Any]) -> None:
    meta = _meta(req)
    meta[IMAGE_KEY] = _swap_digest(meta[IMAGE_KEY])
    _set_meta(req, meta)


def t_metadata_sandbox(req: dict[str, Any]) -> None:
    meta = _meta(req)
    meta["io.kubernetes.cri.container-type"] = "sandbox"
    _set_meta(req, meta)


def t_no_pull(req: dict[str, Any]) -> None:
    req["storages"] = []  # the host supplies the rootfs itself


def t_two_pulls(req: dict[str, Any]) -> None:
    second = copy.deepcopy(req["storages"][0])
    second["source"] = _swap_digest(second["source"])
    req["storages"].append(second)


TAMPERINGS = {f.__name__[2:]: f for f in (t_source, t_source_tag, t_annotation, t_metadata,
                                            t_metadata_sandbox, t_no_pull, t_two_pulls)}


def test_unmodified_request_is_allowed_by_both() -> None:
    req = _input(_gid_request())
    assert _policy("createcontainer/gid", patched=False).evaluate("CreateContainerRequest", req).allowed
    assert _policy("createcontainer/gid", patched=True).evaluate("CreateContainerRequest", req).allowed


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampering_upstream_allows_patched_denies(name: str) -> None:
    req = _gid_request()
    TAMPERINGS[name](req)
    request = _input(req)
    upstream = _policy("createcontainer/gid", patched=False).evaluate("CreateContainerRequest", request)
    if name != "two_pulls":  # upstream already needs count(policy storages) == inputs - pulls
        assert upstream.allowed, f"{name}: upstream denied already"
    decision = _policy("createcontainer/gid", patched=True).evaluate("CreateContainerRequest", request)
    assert not decision.allowed, name


def test_policy_without_digest_denies_every_guest_pull() -> None:
    def unpin(data: dict[str, Any]) -> None:
        for c in data["containers"]:
            ann = c["OCI"]["Annotations"]
            if IMAGE_KEY in ann:
                ann[IMAGE_KEY] = ann[IMAGE_KEY].split("@")[0] + ":latest"

    req = _input(_gid_request())
    assert not _policy("createcontainer/gid", True, unpin).evaluate("CreateContainerRequest", req).allowed


def _directories() -> list[str]:
    return sorted(p.parent.relative_to(KATA).as_posix() for p in KATA.rglob("testcases.json")
                  if (POLICIES / p.parent.relative_to(KATA) / "policy.rego").is_file())


@pytest.mark.parametrize("directory", _directories())
def test_kata_cases_decide_as_before(directory: str) -> None:
    upstream, patched = _policy(directory, False), _policy(directory, True)
    cases = json.loads((KATA / directory / "testcases.json").read_text())
    diverged = False  # after a by-design denial the policy states differ (state-dependent cases)
    for index, case in enumerate(cases):
        if case["kind"] == "CopyFileRequest":
            continue
        request = to_policy_json(from_policy_json(getattr(agent_pb2, case["kind"]), case["request"]))
        results = []
        for policy in (upstream, patched):
            try:
                results.append(policy.evaluate(case["kind"], request).allowed)
            except Exception:
                results.append(None)  # evaluation error (strict builtins): same on both sides
        reason = changed_by_design(case["request"]) if case["kind"] == "CreateContainerRequest" else None
        assert not (results[1] and not results[0]), (directory, index, "patched rules allow more")
        if reason is not None and results[0]:
            assert results == [True, False], (directory, index, reason)
            diverged = True
        elif not diverged:
            assert results[0] == results[1], (directory, index, case["description"])


def test_patch_refuses_unknown_rules_and_double_patch() -> None:
    with pytest.raises(PatchError):
        patch_rules("package agent_policy\n")
    with pytest.raises(PatchError):
        patch_rules(patch_rules(RULES))
    assert rule_module().startswith("# Image pinning")
