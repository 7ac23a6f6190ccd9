"""Bounded atheris run over the configuration parser and the TLS session's handshake input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_fuzzer


@pytest.mark.slow
def test_atheris_config_and_handshake(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ingress").write_bytes(b"web#8080#false##metrics#9090#true")
    (corpus / "egress").write_bytes(b"billing#127.137.0.1:8081#billing-svc:8080")
    (corpus / "hello").write_bytes(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(200))
    run_fuzzer("tests.meshproxy.fuzz_mesh", corpus, seconds_env="MESHPROXY_FUZZ_SECONDS", max_len=4400)
