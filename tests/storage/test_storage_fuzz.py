"""Bounded atheris run over the storage option parsers and the mux frame decoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_fuzzer


@pytest.mark.slow
def test_atheris_storage_options_and_mux(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(b"\x02\x05" + b"X-kata.dmverity.roothash=" + b"ab" * 32)
    run_fuzzer("tests.storage.fuzz_storage", corpus, seconds_env="STORAGE_FUZZ_SECONDS", max_len=8192)
