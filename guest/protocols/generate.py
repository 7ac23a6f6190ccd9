"""Regenerate the Python modules for the agent API .proto files (needs grpcio-tools).

    .venv/bin/python -m guest.protocols.generate [OUT_ROOT]

The .proto files import each other as ``guest/protocols/<name>.proto`` so the generated modules import
each other as ``guest.protocols.<name>_pb2``; OUT_ROOT defaults to the repository root. The generated
code is committed; tests/guest/test_agent_protocols.py regenerates into a temporary directory and compares.
The protoc driver is common.protoc.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import protoc

PROTO_NAMES = ("types", "oci", "csi", "health", "agent")
PROTOS = tuple(f"guest/protocols/{name}.proto" for name in PROTO_NAMES)


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto into ``out_root/guest/protocols``; return the files written."""
    return protoc.compile_protos(PROTOS, out_root)


if __name__ == "__main__":
    raise SystemExit(protoc.main(PROTOS, sys.argv[1:]))
