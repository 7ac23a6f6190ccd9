"""Run every atheris target for a bounded time (in parallel, seeded with the real vectors)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from attvectors import CONTRAST, VECTORS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SECONDS = int(os.environ.get("ATTESTATION_FUZZ_SECONDS", "15"))
SEEDS = {
    "snp_report": [
        VECTORS / "snp/gsg-milan-v2-vcek/report.bin",
        VECTORS / "snp/msft-milan-v3-vcek/report.bin",
    ],
    "cert_table": [
        VECTORS / "snp/gsg-milan-v2-vcek/cert_table.bin",
        VECTORS / "snp/trustee-milan-v3-vlek/cert_table.bin",
    ],
    "tdx_quote": [VECTORS / "tdx/gtg-spr-e4-v4/quote.dat", VECTORS / "tdx/gtg-v5-tdx15/quote.dat"],
    "collateral": [
        VECTORS / "tdx/collateral/gtg-2023/tcb_info_fmspc_50806f000000.json",
        VECTORS / "tdx/collateral/gtg-2023/qe_identity.json",
    ],
    "reference_values": [CONTRAST / "manifest.json"],
}


@pytest.mark.fuzz
@pytest.mark.slow
def test_fuzz_targets_bounded(tmp_path: Path) -> None:
    procs = {}
    for target, seeds in SEEDS.items():
        corpus = tmp_path / target
        corpus.mkdir()
        for s in seeds:
            shutil.copy(s, corpus / s.name)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs[target] = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "fuzz_targets.py"),
                target,
                f"-max_total_time={SECONDS}",
                "-rss_limit_mb=2048",
                "-max_len=8192",
                f"-artifact_prefix={tmp_path}/{target}-",
                str(corpus),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    failures = []
    for target, proc in procs.items():
        out, _ = proc.communicate(timeout=SECONDS * 10 + 60)
        if proc.returncode != 0:
            failures.append(f"{target}: exit {proc.returncode}\n{out.decode(errors='replace')[-3000:]}")
    assert not failures, "\n\n".join(failures)
