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
