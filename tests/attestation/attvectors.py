"""Helpers for the attestation tests: the shared vector index and its files."""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from typing import Any

from tests.support import shared_path

VECTORS = shared_path("attestation")
CONTRAST = shared_path("contrast")


@cache
def index() -> dict[str, Any]:
    return json.loads((VECTORS / "index.json").read_text())


def vectors(kind_prefix: str) -> list[dict[str, Any]]:
    return [v for v in index()["vectors"] if v["kind"].startswith(kind_prefix)]


def vector(vid: str) -> dict[str, Any]:
    return next(v for v in index()["vectors"] if v["id"] == vid)


def read(rel: str) -> bytes:
    return (VECTORS / rel).read_bytes()


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.split(" ")[0].replace("Z", "+00:00"))


def snp_entry(measurement_hex: str, product: str = "Milan") -> dict[str, Any]:
    """The most permissive SNP reference-value entry Contrast's rules allow, for one measurement."""
    return {
        "ProductName": product,
        "TrustedMeasurement": measurement_hex,
        "MinimumTCB": {"BootloaderVersion": 0, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0},
        "GuestPolicy": {"SMT": True},
    }
