"""The policy pins that emptyDirs are encrypted: a CreateContainer that asks for the same block
volume without ``encryption_key=ephemeral`` is denied.

Policy: genpolicy (this project's) over kata's emptyDir pod with kata's settings
(``emptydir_type: block-encrypted``) and kata's rules.rego, evaluated by guest.policy.AgentPolicy;
the request is kata's own allowed CreateContainer case for that pod, then altered as a host would.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from guest.cli import canonical_input
from guest.policy.engine import AgentPolicy
from guest.storage.encrypted import EPHEMERAL_KEY, parse_block_driver_options
from tests.genpolicy.test_genpolicy_kata import CASES, KATA, generate_for
from tests.genpolicy.test_genpolicy_propagation import containerd_shaped

pytestmark = pytest.mark.encrypted_storage

DIRECTORY = "createcontainer/volumes/emptydir"


def _allowed_case() -> dict[str, Any]:
    cases = json.loads((CASES / DIRECTORY / "testcases.json").read_text())
    case = next(c for c in cases if c["allowed"] and c["kind"] == "CreateContainerRequest")
    assert all(EPHEMERAL_KEY in s["driver_options"] for s in case["request"]["storages"])
    # with the Bidirectional mount's propagation as containerd sends it
    return {**case, "request": containerd_shaped(case)}


def _decide(request: dict[str, Any]) -> bool:
    policy = AgentPolicy()
    policy.set_policy(generate_for(DIRECTORY))
    decision = policy.evaluate("CreateContainerRequest", canonical_input("CreateContainerRequest", request))
    return decision.allowed


def test_settings_make_emptydirs_block_encrypted() -> None:
    settings = json.loads((KATA / "genpolicy-settings.json").read_text())
    assert settings["cluster_config"]["emptydir_type"] == "block-encrypted"
    opts = parse_block_driver_options(settings["volumes"]["emptyDir_encrypted"]["driver_options"])
    assert opts.encrypted and opts.create_filesystem


def test_the_encrypted_request_is_allowed() -> None:
    assert _decide(_allowed_case()["request"])


def _plain(storage: dict[str, Any]) -> None:
    storage["driver_options"] = [o for o in storage["driver_options"] if o != EPHEMERAL_KEY]


def _plain_settings(storage: dict[str, Any]) -> None:  # genpolicy's emptyDir_plain shape
    storage["driver_options"] = ["create_filesystem"]
    storage["options"] = ["discard"]


def _other_key(storage: dict[str, Any]) -> None:
    storage["driver_options"] = ["encryption_key=host-chosen", "create_filesystem"]


@pytest.mark.parametrize("change", [_plain, _plain_settings, _other_key],
                         ids=["no-key", "plain-mode", "host-key"])
@pytest.mark.parametrize("which", ["one", "all"])
def test_a_request_that_drops_the_encryption_is_denied_by_policy(change: Any, which: str) -> None:
    request = copy.deepcopy(_allowed_case()["request"])
    storages = request["storages"]
    for s in storages[:1] if which == "one" else storages:
        change(s)
    assert not _decide(request)
