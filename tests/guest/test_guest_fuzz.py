"""Bounded atheris run of the request/initdata decoding target (15 s in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_fuzzer


@pytest.mark.slow
def test_fuzz_agent_request(tmp_path: Path) -> None:
    run_fuzzer("tests.guest.fuzz.fuzz_agent_request", tmp_path, seconds_env="GUEST_FUZZ_SECONDS",
               rss_limit_mb=1024)
