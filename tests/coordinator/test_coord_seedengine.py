"""Seed engine and det-keygen against Contrast's and c2sp's known answers."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from coordinator import keygen
from coordinator.errors import SeedEngineError
from coordinator.seedengine import SeedEngine
from tests.coordinator.vectors import load

SE = load("seedengine.json")


def sec1(key: Any) -> str:
    der: bytes = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return der.hex()


@pytest.mark.parametrize("case", SE["new_cases"], ids=lambda c: c["id"])
def test_seed_engine_vectors(case: dict[str, Any]) -> None:
    seed, salt = bytes.fromhex(case["secret_seed_hex"]), bytes.fromhex(case["salt_hex"])
    if case.get("expect_error"):
        with pytest.raises(SeedEngineError, match="salt has 28 bytes, expected 32"):
            SeedEngine(seed, salt)
        return
    engine = SeedEngine(seed, salt)
    want = case["expected"]
    assert engine.pod_state_seed.hex() == want["pod_state_seed_hex"]
    assert engine.history_seed.hex() == want["history_seed_hex"]
    assert sec1(engine.root_ca_key) == want["root_ca_key_sec1_der_hex"]
    assert sec1(engine.transaction_signing_key) == want["transaction_signing_key_sec1_der_hex"]


WS_CASES = SE["workload_secret_cases"]["cases"]
C2SP_CASES = SE["keygen_reference_vectors_p384"]["cases"]


@pytest.mark.parametrize("case", WS_CASES, ids=lambda c: repr(c["workload_secret_id"]))
def test_workload_secrets(case: dict[str, Any]) -> None:
    ws = SE["workload_secret_cases"]
    engine = SeedEngine(bytes.fromhex(ws["secret_seed_hex"]), bytes.fromhex(ws["salt_hex"]))
    assert engine.pod_state_seed.hex() == ws["pod_state_seed_hex_computed_here"]
    if case.get("expect_error"):
        with pytest.raises(SeedEngineError):
            engine.workload_secret(case["workload_secret_id"])
        return
    assert engine.workload_secret(case["workload_secret_id"]).hex() == case["expected_secret_hex"]


@pytest.mark.parametrize("case", C2SP_CASES, ids=lambda c: c["secret_hex"][:12])
def test_c2sp_det_keygen_p384(case: dict[str, Any]) -> None:
    secret = bytes.fromhex(case["secret_hex"])
    if len(secret) < 16:
        with pytest.raises(SeedEngineError):
            keygen.p384_scalar(secret)
        return
    assert f"{keygen.p384_scalar(secret):096x}" == case["expected_private_scalar_hex"]


@pytest.mark.parametrize("case", SE["historical_cases_legacy_keygen"]["cases"], ids=lambda c: c["id"])
def test_legacy_keygen_is_not_what_we_implement(case: dict[str, Any]) -> None:
    engine = SeedEngine(bytes.fromhex(case["secret_seed_hex"]), bytes.fromhex(case["salt_hex"]))
    assert sec1(engine.root_ca_key) != case["root_ca_key_sec1_der_hex"]


def test_short_seed_rejected_and_repr_redacted() -> None:
    with pytest.raises(SeedEngineError, match="at least 32"):
        SeedEngine(b"\0" * 31, b"\0" * 32)
    assert "redacted" in repr(SeedEngine(b"\1" * 64, b"\2" * 32))
