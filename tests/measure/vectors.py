"""Loaders for ../shared/testdata/measure and testdata/contrast/idblock.json (one per format)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from tests.support import TESTDATA

MEASURE = TESTDATA / "measure"
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
DEBIAN_OVMF_SHA256 = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773"


@cache
def index() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MEASURE / "index.json").read_text())
    return data


@cache
def idblock_cases() -> list[dict[str, Any]]:
    doc = json.loads((TESTDATA / "contrast" / "idblock.json").read_text())
    cases: list[dict[str, Any]] = doc["cases"]
    return cases


def blob(spec: str | None) -> bytes | None:
    """Resolve the index's kernel/initrd convention: None, '@empty' or a relative path."""
    if spec is None:
        return None
    if spec == "@empty":
        return b""
    return (MEASURE / spec).read_bytes()


def hex_or_none(value: str | None) -> int | None:
    """'0x21' or '0x1 (CLI default)' -> int."""
    if value is None:
        return None
    return int(value.split()[0], 16)


def by_id(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in cases}
