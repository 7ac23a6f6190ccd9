"""/attest report data against Contrast's golden vectors (reportdata.json)."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.server import attest_report_data
from tests.coordinator.vectors import load

RD = load("reportdata.json")


@pytest.mark.parametrize("case", RD["cases"], ids=lambda c: c["id"])
def test_report_data_vectors(case: dict[str, Any]) -> None:
    got = attest_report_data(
        bytes.fromhex(case["nonce_hex"]),
        bytes.fromhex(case["transition_digest_hex"]),
        case["root_ca_bytes_utf8"].encode(),
        case["mesh_ca_bytes_utf8"].encode(),
        bytes.fromhex(case["capabilities_digest_hex"] or ""),
    )
    assert got.hex() == case["expected_report_data_hex"]


def test_transition_is_not_hashed_again() -> None:
    case = RD["cases"][0]
    got = attest_report_data(bytes.fromhex(case["nonce_hex"]), bytes.fromhex(case["transition_digest_hex"]),
                             b"root-ca", b"mesh-ca")
    assert got[:32].hex() != RD["negative_check_computed_here"]["wrong_report_data_first32_hex"]
