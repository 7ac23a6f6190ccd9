"""Manifest validation against Contrast's manifest cases (JSON + RFC 6902 patches)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from coordinator import manifest
from tests.coordinator.vectors import load

MV = load("manifest.json")


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, parts[-1]


def apply_patch(doc: Any, patch: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in patch:
        parent, key = _pointer(doc, op["path"])
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent[int(key)] = op["value"]
            else:
                parent[key] = op["value"]
        elif op["op"] == "remove":
            del parent[int(key) if isinstance(parent, list) else key]
        else:
            raise ValueError(op["op"])
    return doc


@pytest.mark.parametrize("case", MV["cases"], ids=lambda c: c["id"])
def test_manifest_cases(case: dict[str, Any]) -> None:
    raw = json.dumps(apply_patch(MV["base_documents"][case["base"]], case["patch"])).encode()
    if case["expect_valid"]:
        m = manifest.parse(raw)
        assert m.raw == raw
        assert m.policies[m.coordinator_policy_hash()].role == "coordinator"
        return
    with pytest.raises(manifest.ManifestInvalidError) as err:
        manifest.parse(raw)
    if sub := case.get("expected_error_substring"):
        assert sub in str(err.value)


@pytest.mark.parametrize("case", MV["expected_missing_cases"], ids=lambda c: json.dumps(c["patch"]))
def test_expected_missing(case: dict[str, Any]) -> None:
    problems = manifest.check(apply_patch(MV["base_documents"][case["base"]], case["patch"]))
    assert problems
    assert all(p.expected_missing for p in problems) == case["only_expected_missing"]


def test_not_json_and_oversize() -> None:
    with pytest.raises(manifest.ManifestInvalidError, match="not valid JSON"):
        manifest.parse(b"{")
    with pytest.raises(manifest.ManifestInvalidError, match="limit"):
        manifest.parse(b" " * (manifest.MAX_MANIFEST + 1))


def test_seedshare_key_roundtrip() -> None:
    hexkey = MV["base_documents"]["snp"]["SeedshareOwnerPubKeys"][0]
    assert manifest.pkcs1_der(manifest.load_seedshare_key(hexkey)).hex() == hexkey


def test_one_reference_value_parser_turin_and_unknown_fields() -> None:
    """The manifest's reference values go through attestation's parser only: Turin is a product there
    (the manifest's own rules used to reject it while the verifier accepted it), and what that parser
    refuses (an unknown field) makes the manifest invalid instead of failing later at handshake time."""
    from attestation.reference_values import SnpReferenceValues
    from attestation.snp.product import Product
    from coordinator import verifiers

    doc = copy.deepcopy(MV["base_documents"]["snp"])
    doc["ReferenceValues"]["snp"][0]["ProductName"] = "Turin"
    m = manifest.parse(json.dumps(doc).encode())
    (entry,) = m.reference_values.snp
    assert isinstance(entry, SnpReferenceValues) and entry.product is Product.TURIN
    # Pods and the Coordinator get their validators from the same parsed values.
    assert len(verifiers.coordinator_validators(m, None)) == 1
    assert len(verifiers.validators(m.reference_values, simulated_roots=None, revocation=None)) == 1
    doc["ReferenceValues"]["snp"][0]["ProductName"] = "Bergamo"
    with pytest.raises(manifest.ManifestInvalidError, match="ProductName: unknown product 'Bergamo'"):
        manifest.parse(json.dumps(doc).encode())
    doc["ReferenceValues"]["snp"][0]["ProductName"] = "Milan"
    doc["ReferenceValues"]["snp"][0]["TrustedMeasurment"] = "00"
    unknown = r"snp\[0\]: unknown field\(s\) TrustedMeasurment"
    with pytest.raises(manifest.ManifestInvalidError, match=unknown):
        manifest.parse(json.dumps(doc).encode())


def test_every_problem_of_an_entry_is_reported() -> None:
    doc = copy.deepcopy(MV["base_documents"]["snp"])
    entry = doc["ReferenceValues"]["snp"][0]
    del entry["MinimumTCB"]["TEEVersion"], entry["MinimumTCB"]["SNPVersion"]
    entry["TrustedMeasurement"] = ""
    problems = {p.path: p.expected_missing for p in manifest.check(doc)}
    assert problems == {
        "ReferenceValues.snp[0].TrustedMeasurement": False,
        "ReferenceValues.snp[0].MinimumTCB.TEEVersion": True,
        "ReferenceValues.snp[0].MinimumTCB.SNPVersion": True,
    }
