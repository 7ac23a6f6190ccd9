"""Transit-engine ciphertext format and key derivation against transitengine.json."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from coordinator import transit
from coordinator.errors import InvalidRequestError
from coordinator.seedengine import SeedEngine
from tests.coordinator.vectors import load

TE = load("transitengine.json")


@pytest.mark.parametrize("case", TE["round_trip_cases"], ids=lambda c: c["id"])
def test_round_trip_and_known_answer(case: dict[str, Any]) -> None:
    key = base64.b64decode(case["key_b64"])
    pt, ad = base64.b64decode(case["plaintext_b64"]), base64.b64decode(case["associated_data_b64"])
    ka = case["known_answer_computed_here"]
    ct = transit.encrypt(key, pt, ad, ka["key_version"], bytes.fromhex(ka["nonce_hex"]))
    assert ct == ka["ciphertext_field"]
    assert transit.decrypt(key, ct, ad) == pt
    assert transit.decrypt(key, transit.encrypt(key, pt, ad, 7), ad) == pt  # random nonce
    with pytest.raises(InvalidRequestError):
        transit.decrypt(key, ct, ad + b"x")


def test_derived_keys() -> None:
    engine = SeedEngine(bytes(64), bytes(32))
    for label, want in TE["http_cases"]["derived_keys_hex_computed_here"].items():
        version, _, name = label.partition("_")
        assert transit.derive_key(engine, name, int(version)).hex() == want
    for bad_name, version in (("", 1), ("wrong/url", 1), ("ok", -1), ("ok", 2**32)):
        with pytest.raises(InvalidRequestError):
            transit.derive_key(engine, bad_name, version)


@pytest.mark.parametrize("bad", ["", "vault:v1", "vault:1:AAAA", "vault:v99999999999:AAAA", "vault:v1:!!!!",
                                 "other:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "vault:v1:AAAA"])
def test_malformed_ciphertexts(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        transit.decrypt(bytes(32), bad, b"")
