"""Regenerate the Python modules for the shim's .proto files (needs grpcio-tools).

    .venv/bin/python -m runtime.protocols.generate [OUT_ROOT]

The generated code is committed; tests/runtime/test_runtime_protocols.py regenerates into a
temporary directory and compares. The protoc driver is common.protoc.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import protoc

PROTO_NAMES = ("mount", "task", "shim", "events", "runtimeoptions")
PROTOS = tuple(f"runtime/protocols/{name}.proto" for name in PROTO_NAMES)


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto into ``out_root/runtime/protocols``; return the files written."""
    return protoc.compile_protos(PROTOS, out_root)


if __name__ == "__main__":
    raise SystemExit(protoc.main(PROTOS, sys.argv[1:]))
