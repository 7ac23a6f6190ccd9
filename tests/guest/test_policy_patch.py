"""JSON Patch ``test``: serde_json's Value equality (what kata-agent's json-patch crate applies).

The host controls request fields that a policy may compare with its state through a ``test`` op.
Python's ``==`` says ``True == 1`` and ``0 == False``; serde_json says a boolean is never a number,
so kata-agent fails such a patch (INTERNAL, the request is not allowed) where a Python ``==`` would
let it through. Also: an integer is never a float in serde_json (``1 != 1.0``, unlike RFC 6902),
integers wider than u64/i64 are floats, objects compare without order, and a ``test`` without a
``value`` is malformed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guest.policy.engine import AgentPolicy
from guest.policy.errors import PatchError, PolicyInternalError
from guest.policy.patch import apply_patch, json_equal

# A policy that records a flag at sandbox creation and later lets a request through only if the
# request's own claim about the flag matches the state (a `test` op on an input value).
POLICY = """package agent_policy

import future.keywords.if

default CreateSandboxRequest := false
CreateSandboxRequest := {"allowed": true, "ops": [
    {"op": "add", "path": "/pstate/debug", "value": false},
    {"op": "add", "path": "/pstate/limits", "value": {"pids": 0, "opts": [true, 2]}},
]}

default StartContainerRequest := false
StartContainerRequest := {"allowed": true, "ops": [
    {"op": "test", "path": concat("", ["/pstate/", input.key]), "value": input.claim},
    {"op": "add", "path": "/pstate/started", "value": true},
]}
"""


def _policy() -> AgentPolicy:
    p = AgentPolicy()
    p.set_policy(POLICY)
    assert p.evaluate("CreateSandboxRequest", {}).allowed
    return p


@pytest.mark.parametrize(("key", "claim"), [
    ("debug", 0), ("debug", 0.0), ("debug", None), ("debug", ""), ("debug", []),
    ("limits", {"pids": False, "opts": [True, 2]}), ("limits", {"pids": 0, "opts": [1, 2]}),
    ("limits", {"pids": 0, "opts": [True, 2.5]}), ("limits", {"pids": 0, "opts": [True]}),
    ("limits", {"pids": 0, "opts": [True, 2], "extra": 1}),
])
def test_host_claim_of_another_json_type_fails_the_patch(key: str, claim: object) -> None:
    p = _policy()
    before = p.state
    with pytest.raises(PolicyInternalError) as e:  # kata-agent: INTERNAL, the request is not run
        p.evaluate("StartContainerRequest", {"key": key, "claim": claim})
    assert f"failed at path '/pstate/{key}': value did not match" in str(e.value)
    assert p.state == before and "started" not in p.state["pstate"]


@pytest.mark.parametrize(("key", "claim"), [
    ("debug", False), ("limits", {"opts": [True, 2], "pids": 0}),
])
def test_host_claim_of_the_same_value_passes(key: str, claim: object) -> None:
    p = _policy()
    assert p.evaluate("StartContainerRequest", {"key": key, "claim": claim}).allowed
    assert p.state["pstate"]["started"] is True


# serde_json's semantics, case by case (a, b, equal?)
CASES: list[tuple[object, object, bool]] = [
    (True, 1, False), (False, 0, False), (1, True, False), (0, False, False), (True, True, True),
    (1, 1.0, False), (1.0, 1, False), (1.5, 1.5, True), (0.0, -0.0, True), (0, -0, True),
    (None, False, False), (None, 0, False), (None, None, True), ("", None, False), ("1", 1, False),
    ([], {}, False), ([1, 2], [2, 1], False), ([True], [1], False), ([[0]], [[False]], False),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True), ({"a": 1}, {"a": True}, False), ({"a": None}, {}, False),
    (1 << 63, 1 << 63, True), (-(1 << 63), -(1 << 63), True),
    (1 << 64, float(1 << 64), True),  # wider than u64: serde_json holds it as an f64
    ((1 << 64) + 1, 1 << 64, True),  # ... so the two parse to the same f64
    (-(1 << 63) - 1, float(-(1 << 63) - 1), True), ((1 << 64) - 1, float((1 << 64) - 1), False),
]


@pytest.mark.parametrize(("a", "b", "equal"), CASES, ids=repr)
def test_json_equal_differential_cases(a: object, b: object, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal
    doc = {"pstate": {"v": a}}
    if equal:
        assert apply_patch(doc, [{"op": "test", "path": "/pstate/v", "value": b}]) == doc
    else:
        with pytest.raises(PatchError):
            apply_patch(doc, [{"op": "test", "path": "/pstate/v", "value": b}])


def test_python_equality_would_differ() -> None:
    # The cases above that Python's == gets wrong: why `test` must not use it.
    wrong = [(a, b) for a, b, equal in CASES if (a == b) != equal]
    assert (True, 1) in wrong and (1, 1.0) in wrong and ([True], [1], ) in wrong


def test_test_without_value_is_malformed() -> None:
    doc = {"pstate": {"v": None}}
    with pytest.raises(PatchError) as e:
        apply_patch(doc, [{"op": "test", "path": "/pstate/v"}])
    assert e.value.reason == "missing value"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


@given(JSON, JSON)
def test_json_equal_is_symmetric_and_reflexive(a: object, b: object) -> None:
    assert json_equal(a, a)
    assert json_equal(a, b) == json_equal(b, a)
    if json_equal(a, b):
        assert a == b or isinstance(a, (int, float, list, dict))  # only number widening may differ
