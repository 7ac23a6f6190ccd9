"""Bounded atheris run of the request/initdata decoding target (15 s in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(__file__).with_name("fuzz") / "fuzz_agent_request.py"


@pytest.mark.slow
def test_fuzz_agent_request(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    seconds = os.environ.get("GUEST_FUZZ_SECONDS", "15")
    result = subprocess.run(
        [sys.executable, str(TARGET), f"-max_total_time={seconds}", "-rss_limit_mb=1024", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
