"""The checks a recovering Coordinator makes on its disk (coordinator/recovery.py, owners.py,
identity.py), each fed a store or document the host has tampered with."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from coordinator import identity
from coordinator import manifest as manifest_mod
from coordinator.cli.__main__ import main as cli_main
from coordinator.cli.workspace import Workspace
from coordinator.errors import OwnerAnchorError, RollbackError, UnanchoredOwnerError, UntrustedHistoryError
from coordinator.history import LATEST_KEY, ZERO, History, LatestTransition, Transition
from coordinator.owners import OWNERS_ENTRY, OwnerAnchor
from coordinator.recovery import verify_history
from coordinator.seedengine import SeedEngine
from coordinator.simulation import host_data_for
from coordinator.state import key_digest
from coordinator.store import FileStore
from tests.coordinator.harness import SIMULATED_REFERENCE_VALUES, initdata


@pytest.fixture(scope="module")
def owner_keys() -> list[str]:
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    return [manifest_mod.pkcs1_der(k.public_key()).hex() for k in keys]


def manifest(name: str, seedshare: list[str], owners: list[str] | None = None) -> bytes:
    coordinator = hashlib.sha256(initdata("coordinator")).hexdigest()
    workload = hashlib.sha256(initdata(name)).hexdigest()
    doc: dict[str, Any] = {
        "Policies": {
            coordinator: {"SANs": ["coordinator"], "WorkloadSecretID": "coordinator", "Role": "coordinator"},
            workload: {"SANs": [name], "WorkloadSecretID": name},
        },
        "ReferenceValues": SIMULATED_REFERENCE_VALUES,
        "WorkloadOwnerKeyDigests": owners or [],
        "SeedshareOwnerPubKeys": seedshare,
    }
    return json.dumps(doc).encode()


def build(store: FileStore, engine: SeedEngine, manifests: list[bytes]) -> list[bytes]:
    """A history as a Coordinator writes it; returns the transition hashes oldest first."""
    history = History(store)
    previous, out = ZERO, []
    for raw in manifests:
        previous = history.set_transition(Transition(history.set_manifest(raw), previous))
        out.append(previous)
    store.set(LATEST_KEY, LatestTransition.sign(previous, engine.transaction_signing_key).marshal())
    return out


@pytest.fixture
def engine() -> SeedEngine:
    return SeedEngine(os.urandom(64), os.urandom(32))


def test_intact_history_verifies(tmp_path: Path, engine: SeedEngine, owner_keys: list[str]) -> None:
    store = FileStore(tmp_path)
    raws = [manifest(n, owner_keys[:1]) for n in ("a", "b", "c")]
    chain = build(store, engine, raws)
    verified = verify_history(History(store), engine, expected_transition=chain[1])
    assert verified.generation == 3
    assert verified.manifest.raw == raws[-1]
    assert verified.transitions == tuple(reversed(chain))


def test_history_signed_with_another_seed(tmp_path: Path, engine: SeedEngine, owner_keys: list[str]) -> None:
    store = FileStore(tmp_path)
    build(store, SeedEngine(os.urandom(64), os.urandom(32)), [manifest("a", owner_keys[:1])])
    with pytest.raises(UntrustedHistoryError, match="not signed by the key the supplied seed derives"):
        verify_history(History(store), engine)


def test_rollback_is_named(tmp_path: Path, engine: SeedEngine, owner_keys: list[str]) -> None:
    store = FileStore(tmp_path)
    chain = build(store, engine, [manifest(n, owner_keys[:1]) for n in ("a", "b")])
    old = LatestTransition.sign(chain[0], engine.transaction_signing_key).marshal()
    store.set(LATEST_KEY, old)  # the host puts back the older, validly signed pointer
    with pytest.raises(RollbackError) as err:
        verify_history(History(store), engine, expected_transition=chain[1])
    assert err.value.latest == chain[0] and err.value.expected_transition == chain[1]
    assert chain[1].hex() in str(err.value)


def test_broken_or_tampered_chain(tmp_path: Path, engine: SeedEngine, owner_keys: list[str]) -> None:
    store = FileStore(tmp_path)
    raws = [manifest(n, owner_keys[:1]) for n in ("a", "b", "c")]
    chain = build(store, engine, raws)
    (tmp_path / "transitions" / chain[1].hex()).unlink()
    with pytest.raises(UntrustedHistoryError, match="chain is broken"):
        verify_history(History(store), engine)
    store2 = FileStore(tmp_path / "second")
    build(store2, engine, raws)
    (tmp_path / "second" / "manifests" / hashlib.sha256(raws[0]).hexdigest()).write_bytes(raws[1])
    with pytest.raises(UntrustedHistoryError, match="cannot be read"):
        verify_history(History(store2), engine)


def test_seedshare_owners_changing_along_the_chain(
    tmp_path: Path, engine: SeedEngine, owner_keys: list[str]
) -> None:
    store = FileStore(tmp_path)
    build(store, engine, [manifest("a", owner_keys[:1]), manifest("b", owner_keys[1:])])
    with pytest.raises(UntrustedHistoryError, match="change along the history"):
        verify_history(History(store), engine)


def test_anchor_limits_the_owner_keys(tmp_path: Path, engine: SeedEngine, owner_keys: list[str]) -> None:
    store = FileStore(tmp_path)
    digest = "ab" * 32
    build(store, engine, [manifest("a", owner_keys[1:], [digest])])
    with pytest.raises(UnanchoredOwnerError, match="SeedshareOwnerPubKeys names a key"):
        verify_history(History(store), engine, OwnerAnchor(frozenset(owner_keys[:1]), frozenset()))
    with pytest.raises(UnanchoredOwnerError, match="WorkloadOwnerKeyDigests names a key"):
        verify_history(History(store), engine, OwnerAnchor(frozenset(owner_keys[1:]), frozenset({"cd" * 32})))
    verify_history(History(store), engine, OwnerAnchor(frozenset(owner_keys), frozenset({digest})))


@pytest.mark.parametrize(("doc", "match"), [
    ("not json", "not JSON"),
    ('{"SeedshareOwnerPubKeys": ["KEY"], "Extra": 1}', "only the fields"),
    ('{"SeedshareOwnerPubKeys": []}', "nobody could recover"),
    ('{"SeedshareOwnerPubKeys": ["zz"]}', "not hex"),
    ('{"SeedshareOwnerPubKeys": ["00ff"]}', "SeedshareOwnerPubKeys"),
    ('{"SeedshareOwnerPubKeys": ["KEY"], "WorkloadOwnerKeyDigests": ["abcd"]}', "expected 32"),
    ('{"SeedshareOwnerPubKeys": "KEY"}', "list of hex strings"),
])
def test_malformed_owner_documents(doc: str, match: str, owner_keys: list[str]) -> None:
    with pytest.raises(OwnerAnchorError, match=match):
        OwnerAnchor.from_json(doc.replace("KEY", owner_keys[0]))


def test_initdata_must_be_the_coordinators_own(owner_keys: list[str]) -> None:
    anchor = OwnerAnchor(frozenset(owner_keys[:1]), frozenset())
    head = 'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
    raw = (head + f"{json.dumps(OWNERS_ENTRY)} = {json.dumps(anchor.to_json())}\n").encode()
    assert identity.anchor_from_initdata(raw, host_data_for(raw)) == anchor
    assert identity.anchor_from_initdata(initdata("plain"), host_data_for(initdata("plain"))) is None
    with pytest.raises(OwnerAnchorError, match="not this Coordinator's initdata"):
        identity.anchor_from_initdata(raw, host_data_for(initdata("plain")))


def test_bind_owners_command(tmp_path: Path) -> None:
    (tmp_path / "coordinator.toml").write_bytes(initdata("coordinator"))
    ws = tmp_path / "ws"
    argv = ["--workspace-dir", str(ws), "bind-owners", "--coordinator-initdata",
            str(tmp_path / "coordinator.toml"), "--out", str(tmp_path / "bound.toml")]
    assert cli_main(argv) == 0
    anchor = OwnerAnchor.from_initdata((tmp_path / "bound.toml").read_bytes())
    seedshare = Workspace(ws).seedshare_owner_key(create=False)
    owner = Workspace(ws).workload_owner_key(create=False)
    assert seedshare is not None and owner is not None and anchor is not None
    assert anchor.seedshare_owner_pub_keys == {manifest_mod.pkcs1_der(seedshare.public_key()).hex()}
    assert anchor.workload_owner_key_digests == {key_digest(owner.public_key()).hex()}
