"""The policy pins the secure image store: a pod with Contrast's ``image-store-size`` annotation gets
the encrypted image-store storage in ``policy_data.sandbox.storages``; a CreateSandbox that sends it
without the ephemeral key, at another PCI path or mount point is denied, and a pod that did not ask
for one cannot be given one. Policy: this project's genpolicy over kata's createsandbox pod with
kata's settings and rules.rego, evaluated by guest.policy.AgentPolicy; the guest's own check of
the storage's shape (defence in depth) refuses the same alterations."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from genpolicy.resources import parse_documents
from guest.backend.errors import InvalidRequestError
from guest.backend.storages import check_image_store_request
from guest.cli import canonical_input
from guest.policy.engine import AgentPolicy
from guest.protocols import agent_pb2
from guest.storage import IMAGE_STORE_ANNOTATION, image_store_storage
from tests.genpolicy.test_genpolicy_kata import CASES, KATA, kata_generator

pytestmark = pytest.mark.encrypted_storage


def _policy(annotated: bool) -> AgentPolicy:
    text = (CASES / "createsandbox" / "pod.yaml").read_text()
    if annotated:
        asked = f'  name: dummy\n  annotations:\n    {IMAGE_STORE_ANNOTATION}: "64Mi"\n'
        text = text.replace("  name: dummy\n", asked, 1)
    (result,) = kata_generator().generate(parse_documents(text, "pod.yaml"))
    policy = AgentPolicy()
    policy.set_policy(result.rego)
    return policy


def _request(store: dict[str, Any] | None) -> dict[str, Any]:
    settings = json.loads((KATA / "genpolicy-settings.json").read_text())
    storages = [s for s in settings["sandbox"]["storages"]]
    if store is not None:
        storages.append(store)
    return {"sandbox_pidns": False, "storages": storages}


def _store() -> dict[str, Any]:
    return {"options": [], "fs_group": None, **copy.deepcopy(image_store_storage())}


def _allowed(policy: AgentPolicy, request: dict[str, Any]) -> bool:
    return policy.evaluate("CreateSandboxRequest", canonical_input("CreateSandboxRequest", request)).allowed


def test_the_encrypted_image_store_is_allowed_for_a_pod_that_asks() -> None:
    policy = _policy(True)
    assert _allowed(policy, _request(_store()))
    assert _allowed(policy, _request(None))  # asking is not an obligation to receive


ALTERATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no key (plaintext)": lambda s: s.update(driver_options=["create_filesystem"]),
    "no options at all": lambda s: s.update(driver_options=[]),
    "a host key option": lambda s: s.update(driver_options=["encryption_key=host", "create_filesystem"]),
    "another PCI path": lambda s: s.update(source="11/00"),
    "another mount point": lambda s: s.update(mount_point="/run/kata-containers/sandbox/storage/x"),
    "mmioblk driver": lambda s: s.update(driver="mmioblk", source="/dev/vdc"),
}


@pytest.mark.parametrize("name", sorted(ALTERATIONS))
def test_a_host_that_downgrades_the_image_store_is_denied(name: str) -> None:
    store = _store()
    ALTERATIONS[name](store)
    assert not _allowed(_policy(True), _request(store))


def test_a_pod_that_did_not_ask_gets_no_image_store() -> None:
    assert not _allowed(_policy(False), _request(_store()))


@pytest.mark.parametrize("name", sorted(ALTERATIONS))
def test_the_guest_refuses_the_same_downgrades_itself(name: str) -> None:
    fields = image_store_storage()
    check_image_store_request(agent_pb2.Storage(**fields))  # type: ignore[arg-type]
    store = dict(fields)
    ALTERATIONS[name](store)
    with pytest.raises(InvalidRequestError):
        check_image_store_request(agent_pb2.Storage(**store))  # type: ignore[arg-type]
