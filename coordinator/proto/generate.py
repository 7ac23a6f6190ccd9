"""Regenerate the MeshAPI/UserAPI protobuf modules (needs grpcio-tools).

    .venv/bin/python -m coordinator.proto.generate [OUT_ROOT]

The generated code is committed; tests/coordinator/test_coord_proto_sync.py regenerates into a temporary
directory and compares byte for byte. The protoc driver is shared with the evidence protos.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attestation.atls.proto import generate as _shared

PROTOS = ("coordinator/proto/meshapi.proto", "coordinator/proto/userapi.proto")
REPO_ROOT = _shared.REPO_ROOT
STUB_HEADER = _shared.STUB_HEADER


def generate(out_root: Path, protos: tuple[str, ...] = PROTOS) -> list[Path]:
    return _shared.generate(out_root, protos)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in generate(Path(args[0]) if args else REPO_ROOT):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
