"""Regenerate the Python modules for the agent API .proto files (needs grpcio-tools).

    .venv/bin/python -m guest.protocols.generate [OUT_ROOT]

The .proto files import each other as ``guest/protocols/<name>.proto`` so the generated modules import
each other as ``guest.protocols.<name>_pb2``; OUT_ROOT defaults to the repository root. The generated
code is committed; tests/guest/test_agent_protocols.py regenerates into a temporary directory and compares.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTO_NAMES = ("types", "oci", "csi", "health", "agent")
REPO_ROOT = Path(__file__).resolve().parents[2]
STUB_HEADER = "# mypy: ignore-errors\n"


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto into ``out_root/guest/protocols``; return the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # test/dev dependency only

    include = str(resources.files("grpc_tools") / "_proto")
    out_root.mkdir(parents=True, exist_ok=True)
    protos = [f"guest/protocols/{name}.proto" for name in PROTO_NAMES]
    args = ["protoc", f"-I{REPO_ROOT}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}"]
    rc = protoc.main([*args, *protos])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    out_dir = out_root / "guest" / "protocols"
    written = sorted(p for p in out_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))
    for path in written:
        if path.suffix == ".pyi":
            # The stubs protoc writes are not --strict clean (bare Mapping; a field named like its message
            # type shadows the class). Their declarations still type-check our callers.
            path.write_text(STUB_HEADER + path.read_text())
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else REPO_ROOT
    for path in generate(out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
