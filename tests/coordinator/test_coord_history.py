"""History store: Contrast's history vectors, CAS rules, walks, tamper detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.errors import (
    HashMismatchError,
    HistoryError,
    LatestChangedError,
    NotFoundError,
    SignatureError,
)
from coordinator.history import ZERO, History, LatestTransition, Transition
from coordinator.store import FileStore
from tests.coordinator.vectors import load

HV = load("history.json")


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(FileStore(tmp_path))


CONTENT = [c for c in HV["content_addressed"] if "data_utf8" in c]


@pytest.mark.parametrize("case", CONTENT, ids=lambda c: c["data_utf8"])
def test_content_addressing(history: History, case: dict[str, Any]) -> None:
    digest = history.set_manifest(case["data_utf8"].encode())
    assert digest.hex() == case["sha256_hex"]
    assert (history.store.root / "manifests" / case["sha256_hex"]).read_bytes() == case["data_utf8"].encode()
    assert history.get_manifest(digest) == case["data_utf8"].encode()


def test_hash_mismatch_and_not_found(history: History) -> None:
    case = next(c for c in HV["content_addressed"] if c.get("case") == "hash mismatch")
    history.store.set(f"manifests/{case['stored_key_hash']}", case["stored_value_utf8"].encode())
    with pytest.raises(HashMismatchError):
        history.get_manifest(bytes.fromhex(case["stored_key_hash"]))
    with pytest.raises(NotFoundError):
        history.get_policy(b"\1" * 32)


def test_transition_vector(history: History) -> None:
    t = HV["transition"]
    tr = Transition(bytes.fromhex(t["manifest_hash_hex"]), bytes.fromhex(t["previous_transition_hash_hex"]))
    assert tr.marshal().hex() == t["serialised_hex"]
    digest = history.set_transition(tr)
    assert digest.hex() == t["expected_transition_hash_hex"]
    assert (history.store.root / t["expected_key"]).exists()
    history.store.set(t["expected_key"].replace(t["expected_transition_hash_hex"], "ab" * 32), b"hello")
    with pytest.raises(HistoryError):
        Transition.unmarshal(t["unmarshal_error_case"]["stored_value_utf8"].encode())


@pytest.mark.parametrize("case", HV["latest_transition"]["cases"], ids=lambda c: c["id"])
def test_latest_signature_vectors(history: History, case: dict[str, Any]) -> None:
    pub = serialization.load_der_public_key(
        bytes.fromhex(HV["latest_transition"]["test_signing_key"]["public_key_spki_der_hex"])
    )
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    if case["value_hex"] is not None:
        history.store.set("transitions/latest", bytes.fromhex(case["value_hex"]))
    if case["expect_ok"]:
        assert history.get_latest(pub).transition_hash.hex() == case["value_hex"][:64]
    else:
        with pytest.raises((SignatureError, NotFoundError)):
            history.get_latest(pub)


def test_set_latest_is_compare_and_swap(history: History) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pub = key.public_key()
    first = LatestTransition.sign(b"\1" * 32, key)
    second = LatestTransition.sign(b"\2" * 32, key)
    with pytest.raises(LatestChangedError):
        history.set_latest(first, second, pub)  # old given but nothing stored
    history.set_latest(None, first, pub)
    with pytest.raises(LatestChangedError, match="has changed since last read"):
        history.set_latest(None, second, pub)
    with pytest.raises(LatestChangedError):
        history.set_latest(second, first, pub)
    history.set_latest(first, second, pub)
    assert history.get_latest(pub) == second
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SignatureError):
        history.set_latest(second, LatestTransition.sign(b"\3" * 32, other), pub)


def test_walk(history: History) -> None:
    assert list(history.walk(ZERO)) == []
    with pytest.raises(NotFoundError):
        list(history.walk(b"\7" * 32))
    prev = ZERO
    for i in range(42):
        prev = history.set_transition(Transition(i.to_bytes(32, "big"), prev))
    other = ZERO
    for i in range(5):
        other = history.set_transition(Transition((1000 + i).to_bytes(32, "big"), other))
    assert len(list(history.walk(prev))) == 42


def test_invalid_keys_rejected(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for bad in ("../etc/passwd", "a/b/c", "a", "manifests/x.y"):
        with pytest.raises(HistoryError):
            store.get(bad)
