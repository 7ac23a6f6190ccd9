"""atheris target: superblock parsing and verification over attacker-controlled hash files raise only
VerityError. Run by test_verity_fuzz.py as ``python -m tests.verity.fuzz_superblock -max_total_time=N``."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from image.verity import VerityError, verify
    from image.verity.superblock import Superblock

_DIR = tempfile.mkdtemp(prefix="verity-fuzz-")
_DATA = os.path.join(_DIR, "data")
_HASH = os.path.join(_DIR, "hash")
with open(_DATA, "wb") as _f:
    _f.write(bytes(range(256)) * 64)  # 16 KiB of data: 4 blocks of 4096, 32 of 512


def test_one_input(raw: bytes) -> None:
    with contextlib.suppress(VerityError):
        Superblock.decode(raw.ljust(512, b"\0"))
    with open(_HASH, "wb") as f:
        f.write(raw)
    with contextlib.suppress(VerityError):
        verify(_DATA, _HASH, bytes(32), workers=1)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
