"""Bounded atheris runs (seeded with real simulated evidence and Contrast's manifest cases)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.atls.platforms import SnpIssuer
from attestation.testing import SimulatedSnpProvider

FUZZ_SECONDS = int(os.environ.get("ATLS_FUZZ_SECONDS", "15"))
ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / ".." / "shared" / "testdata" / "contrast" / "manifest.json"


def run_target(name: str, corpus: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.atls.fuzz_atls", name, f"-max_total_time={FUZZ_SECONDS}",
         "-max_len=8192", "-rss_limit_mb=2048", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120, check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


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
