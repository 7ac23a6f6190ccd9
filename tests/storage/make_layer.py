"""Regenerates data/layer.erofs, the container layer the in-guest verity tests mount.

Run on the host (needs mkfs.erofs): ``python tests/storage/make_layer.py``. Deterministic: the
same erofs-utils version gives the same bytes (fixed timestamp, UUID, owners).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELLO = b"hello from a verity-protected layer\n"
LAYER = HERE / "data" / "layer.erofs"
ORACLE = HERE.parents[2] / "oracle" / "run"  # veritysetup/dmsetup, /mnt/share/oracle/run in the guest
BLOB_SIZE = 64 * 1024


def blob() -> bytes:
    out = bytearray()
    c = b"layer"
    while len(out) < BLOB_SIZE:
        c = hashlib.sha256(c).digest()
        out += c
    return bytes(out[:BLOB_SIZE])


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "root"
        root.mkdir()
        (root / "hello.txt").write_bytes(HELLO)
        (root / "blob.bin").write_bytes(blob())
        subprocess.run(["mkfs.erofs", "--quiet", "-T0", "-U", "c0c0a000-0000-4000-8000-0000000000aa",
                        "--all-root", str(HERE / "data" / "layer.erofs"), str(root)], check=True)


if __name__ == "__main__":
    main()
