"""Regenerate the MeshAPI/UserAPI protobuf modules (needs grpcio-tools).

    .venv/bin/python -m coordinator.proto.generate [OUT_ROOT]

The generated code is committed; tests/coordinator/test_coord_proto_sync.py regenerates into a temporary
directory and compares byte for byte. The protoc driver is common.protoc.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import protoc

PROTOS = ("coordinator/proto/meshapi.proto", "coordinator/proto/userapi.proto")


def generate(out_root: Path, protos: tuple[str, ...] = PROTOS) -> list[Path]:
    return protoc.compile_protos(protos, out_root)


if __name__ == "__main__":
    raise SystemExit(protoc.main(PROTOS, sys.argv[1:]))
