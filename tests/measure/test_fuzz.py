"""Bounded atheris run over the firmware parser (15 s, seeded with the real fixtures)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.measure.vectors import MEASURE

FUZZ_SECONDS = int(os.environ.get("MEASURE_FUZZ_SECONDS", "15"))
ROOT = Path(__file__).resolve().parents[2]


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
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.measure.fuzz_firmware",
            f"-max_total_time={FUZZ_SECONDS}",
            "-max_len=16384",
            "-rss_limit_mb=2048",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done" in proc.stderr, proc.stderr[-2000:]
