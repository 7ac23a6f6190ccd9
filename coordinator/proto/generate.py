"""Regenerate the MeshAPI/UserAPI protobuf modules (needs grpcio-tools).

    .venv/bin/python -m coordinator.proto.generate [OUT_ROOT]

The generated code is committed; tests/coordinator/test_coord_proto_sync.py regenerates into a temporary
directory and compares byte for byte.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTOS = ("coordinator/proto/meshapi.proto", "coordinator/proto/userapi.proto")
REPO_ROOT = Path(__file__).resolve().parents[2]
STUB_HEADER = "# mypy: ignore-errors\n"


def generate(out_root: Path, protos: tuple[str, ...] = PROTOS) -> list[Path]:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # test/dev dependency only

    include = str(resources.files("grpc_tools") / "_proto")
    out_root.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{REPO_ROOT}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}"]
    if protoc.main([*args, *protos]) != 0:
        raise RuntimeError("protoc failed")
    written: list[Path] = []
    for proto in protos:
        stem = out_root / proto.removesuffix(".proto")
        for path in (stem.with_name(stem.name + "_pb2.py"), stem.with_name(stem.name + "_pb2.pyi")):
            if path.suffix == ".pyi":
                # protoc's stubs are not --strict clean (bare Mapping); their declarations still type callers.
                path.write_text(STUB_HEADER + path.read_text())
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in generate(Path(args[0]) if args else REPO_ROOT):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
