"""Bounded atheris run over the storage option parsers and the mux frame decoder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_SECONDS = int(os.environ.get("STORAGE_FUZZ_SECONDS", "15"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_atheris_storage_options_and_mux(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(b"\x02\x05" + b"X-kata.dmverity.roothash=" + b"ab" * 32)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "storage" / "fuzz_storage.py"),
         f"-max_total_time={FUZZ_SECONDS}", "-max_len=8192", "-rss_limit_mb=2048", str(corpus)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
