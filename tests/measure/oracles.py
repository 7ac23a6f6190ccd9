"""osslsigncode as the Authenticode oracle: sign a PE with a throwaway key, read back its digest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def osslsigncode_digest(pe: Path, work: Path) -> tuple[str, bytes]:
    """(the SHA-384 Authenticode digest osslsigncode calculates, the signed file) for ``pe``."""
    tool = shutil.which("osslsigncode")
    if tool is None or shutil.which("openssl") is None:
        pytest.skip("osslsigncode/openssl not installed (.ci/apt/measure.txt installs osslsigncode)")
    key, cert, signed = work / "k.pem", work / "c.pem", work / "signed.efi"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-subj", "/CN=measure-test", "-days", "1"], check=True, capture_output=True)
    subprocess.run([tool, "sign", "-certs", cert, "-key", key, "-h", "sha384", "-in", pe, "-out", signed],
                   check=True, capture_output=True)
    out = subprocess.run([tool, "verify", "-in", signed], capture_output=True, text=True, check=False)
    line = next(x for x in out.stdout.splitlines() if x.startswith("Calculated message digest"))
    return line.split(":")[1].strip().lower(), signed.read_bytes()
