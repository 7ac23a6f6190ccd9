"""Bounded atheris runs (seeded with real simulated evidence and Contrast's manifest cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attestation.atls.platforms import SnpIssuer
from attestation.testing import SimulatedSnpProvider
from tests.support import run_fuzzer, shared_path

MANIFESTS = shared_path("contrast", "manifest.json")


def run_target(name: str, corpus: Path) -> None:
    run_fuzzer("tests.atls.fuzz_atls", corpus, args=[name], seconds_env="ATLS_FUZZ_SECONDS", max_len=8192)


@pytest.mark.slow
def test_fuzz_evidence(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    issuer = SnpIssuer(SimulatedSnpProvider())
    for i in range(3):
        (corpus / f"seed{i}").write_bytes(issuer.issue(bytes([i]) * 64))
    run_target("evidence", corpus)


@pytest.mark.slow
def test_fuzz_manifest(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, doc in json.loads(MANIFESTS.read_text())["base_documents"].items():
        (corpus / name).write_text(json.dumps(doc))
    run_target("manifest", corpus)
