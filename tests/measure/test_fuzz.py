"""Bounded atheris run over the firmware parser (15 s, seeded with the real fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.measure.vectors import MEASURE
from tests.support import run_fuzzer


@pytest.mark.slow
def test_atheris_firmware_parser(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in (
        "synthetic/fw_s8k.bin",
        "synthetic/fw_syn_b.bin",
        "snp/ssm-fixtures/ovmf_AmdSev_suffix.bin",
        "snp/ssm-fixtures/ovmf_OvmfX64_suffix.bin",
    ):
        shutil.copy(MEASURE / name, corpus / Path(name).name)
    out = run_fuzzer("tests.measure.fuzz_firmware", corpus, seconds_env="MEASURE_FUZZ_SECONDS", max_len=16384)
    assert "Done" in out, out[-2000:]
