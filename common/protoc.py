"""The protoc driver behind every ``<package>.proto.generate`` (needs grpcio-tools, a dev dependency).

Each .proto is compiled with the repository root on the include path, so generated modules import each
other by their package path (``guest.protocols.types_pb2``). The generated code is committed; each
package's sync test regenerates into a temporary directory and compares byte for byte.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["REPO_ROOT", "STUB_HEADER", "ProtoSet", "ProtocError", "compile_protos"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# protoc's stubs are not --strict clean (bare Mapping; a field named like its message type shadows the
# class); their declarations still type-check the callers.
STUB_HEADER = "# mypy: ignore-errors\n"


class ProtocError(RuntimeError):
    def __init__(self, code: int, protos: Sequence[str]) -> None:
        super().__init__(f"protoc failed with exit code {code} on {', '.join(protos)}")
        self.code = code


def compile_protos(protos: Sequence[str], out_root: Path, repo_root: Path = REPO_ROOT) -> list[Path]:
    """Compile ``protos`` (paths relative to ``repo_root``) into ``out_root``; return the files written,
    ``<name>_pb2.py`` then ``<name>_pb2.pyi`` for each proto in order."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # test/dev dependency only

    include = str(resources.files("grpc_tools") / "_proto")
    out_root.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{repo_root}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}"]
    code = protoc.main([*args, *protos])
    if code != 0:
        raise ProtocError(code, protos)
    written: list[Path] = []
    for proto in protos:
        stem = out_root / proto.removesuffix(".proto")
        for path in (stem.with_name(stem.name + "_pb2.py"), stem.with_name(stem.name + "_pb2.pyi")):
            if path.suffix == ".pyi":
                path.write_text(STUB_HEADER + path.read_text())
            written.append(path)
    return written


@dataclass(frozen=True)
class ProtoSet:
    """The .proto files of one package: ``generate`` compiles them, ``main`` is the package's command line
    (``python -m <package>.generate [OUT_ROOT]``; OUT_ROOT defaults to the repository root)."""

    protos: tuple[str, ...]

    @classmethod
    def named(cls, directory: str, names: Sequence[str]) -> ProtoSet:
        return cls(tuple(f"{directory}/{name}.proto" for name in names))

    def generate(self, out_root: Path) -> list[Path]:
        return compile_protos(self.protos, out_root)

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else argv
        for path in self.generate(Path(args[0]) if args else REPO_ROOT):
            print(path)
        return 0
