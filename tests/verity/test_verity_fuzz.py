"""Bounded atheris run over the superblock parser and verifier (seeded with real superblocks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from image.verity import VerityParams, format_hash_tree

from .conftest import SALT_S, data16

FUZZ_SECONDS = int(os.environ.get("VERITY_FUZZ_SECONDS", "15"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_atheris_superblock_and_verify(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "data").write_bytes(data16())
    for i, params in enumerate([VerityParams(salt=SALT_S), VerityParams(salt=b"", hash_name="sha1"),
                                VerityParams(salt=SALT_S, data_block_size=512, hash_block_size=512)]):
        format_hash_tree(tmp_path / "data", corpus / f"seed{i}", params)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.verity.fuzz_superblock", f"-max_total_time={FUZZ_SECONDS}",
         "-max_len=20480", "-rss_limit_mb=2048", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
