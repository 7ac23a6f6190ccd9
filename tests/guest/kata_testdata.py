"""Shared paths to the kata policy test data (used in place, never copied)."""

from __future__ import annotations

import json
from typing import Any

from tests.support import SHARED

KATA_POLICY = SHARED / "testdata" / "kata-policy"
KATA_TESTDATA = KATA_POLICY / "kata" / "tests" / "policy" / "testdata"
POLICIES = KATA_POLICY / "policies"
FIELDS = KATA_POLICY / "derived" / "agent_api_fields.json"
INITDATA_VECTORS = SHARED / "testdata" / "contrast" / "initdata.json"
MSFT = KATA_POLICY / "msft-samples"


def case_dirs() -> list[str]:
    """Test directories (relative to KATA_TESTDATA) that have a policy."""
    found = []
    for cases in sorted(KATA_TESTDATA.rglob("testcases.json")):
        rel = cases.parent.relative_to(KATA_TESTDATA).as_posix()
        if (POLICIES / rel / "policy.rego").is_file():
            found.append(rel)
    return found


def load_cases(rel: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((KATA_TESTDATA / rel / "testcases.json").read_text())
    return data
