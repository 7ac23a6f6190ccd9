"""pytest configuration for the attestation tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: bounded atheris fuzzing run in a subprocess")
    config.addinivalue_line("markers", "tee: needs real SEV-SNP or TDX hardware (skipped elsewhere)")
