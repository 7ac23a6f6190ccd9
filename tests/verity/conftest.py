"""Shared fixtures for the dm-verity tests: the veritysetup oracle and the worked-vector inputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

VERITYSETUP = shutil.which("veritysetup") or next(
    (p for p in ("/usr/sbin/veritysetup", "/sbin/veritysetup") if Path(p).exists()), None)

# Salt S of the worked vectors: bytes 00 01 .. 1f.
SALT_S = bytes(range(32))
SALT_Z = bytes(32)


def data16() -> bytes:
    """16 blocks of 4096; byte j of block i = (7*i + j) mod 256."""
    return bytes((7 * i + j) % 256 for i in range(16) for j in range(4096))


def data257() -> bytes:
    """257 blocks of 4096; every byte of block i = i mod 256."""
    return b"".join(bytes([i % 256]) * 4096 for i in range(257))


def zero1m() -> bytes:
    return bytes(1 << 20)


@pytest.fixture(scope="session")
def veritysetup() -> str:
    if VERITYSETUP is None:
        pytest.skip("veritysetup (Debian cryptsetup-bin) is not installed; .ci/apt/verity.txt installs it")
    return VERITYSETUP


def run_veritysetup(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, errors="replace", timeout=60,
                          check=False)
