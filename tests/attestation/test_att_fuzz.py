"""Run every atheris target for a bounded time (in parallel, seeded with the real vectors)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from attvectors import CONTRAST, VECTORS

from tests.support import start_fuzzer

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
    runs = []
    for target, seeds in SEEDS.items():
        corpus = tmp_path / target
        corpus.mkdir()
        for s in seeds:
            shutil.copy(s, corpus / s.name)
        runs.append(start_fuzzer("tests.attestation.fuzz_targets", corpus, args=[target], max_len=8192,
                                 seconds_env="ATTESTATION_FUZZ_SECONDS",
                                 options=[f"-artifact_prefix={tmp_path}/{target}-"]))
    failures = []
    for run in runs:
        try:
            run.wait()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)
