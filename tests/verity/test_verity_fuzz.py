"""Bounded atheris run over the superblock parser and verifier (seeded with real superblocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from image.verity import VerityParams, format_hash_tree
from tests.support import run_fuzzer

from .conftest import SALT_S, data16


@pytest.mark.slow
def test_atheris_superblock_and_verify(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "data").write_bytes(data16())
    for i, params in enumerate([VerityParams(salt=SALT_S), VerityParams(salt=b"", hash_name="sha1"),
                                VerityParams(salt=SALT_S, data_block_size=512, hash_block_size=512)]):
        format_hash_tree(tmp_path / "data", corpus / f"seed{i}", params)
    run_fuzzer("tests.verity.fuzz_superblock", corpus, seconds_env="VERITY_FUZZ_SECONDS", max_len=20480)
