"""Bounded atheris run over the configuration parser and the TLS session's handshake input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_SECONDS = int(os.environ.get("MESHPROXY_FUZZ_SECONDS", "15"))
HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_atheris_config_and_handshake(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ingress").write_bytes(b"web#8080#false##metrics#9090#true")
    (corpus / "egress").write_bytes(b"billing#127.137.0.1:8081#billing-svc:8080")
    (corpus / "hello").write_bytes(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(200))
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_mesh.py"), f"-max_total_time={FUZZ_SECONDS}", "-max_len=4400",
         "-rss_limit_mb=2048", str(corpus)],
        cwd=HERE.parents[1], capture_output=True, text=True, timeout=FUZZ_SECONDS + 120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
