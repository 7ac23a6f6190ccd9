"""Each package's face: other packages import only the names its ``__init__`` (or a declared face module)
lists in ``__all__``, and the layering holds (common and attestation import nothing above them; the
initializer links only the aTLS client, the MeshAPI protos, the mesh proxy's rule helpers,
guest.storage (secure persistent volumes) and common)."""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    p.rstrip("*") for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    ["packages"]["find"]["include"])
# Modules that are faces of their own (a file format used across packages), besides package __init__s.
FACE_MODULES = {"attestation.initdata", "attestation.snp.idblock", "oci.mediatypes", "oci.policy",
                "image.layers",
                # the hybrid-vsock mux frames: the in-guest relay and the shim's host bridge
                "image.build.inside.mux"}
# What each package may import from the others (a package not named here may use every face).
ALLOWED = {
    "common": set(),
    "attestation": {"common"},
    "initializer": {"common", "attestation", "attestation.atls", "attestation.testing", "coordinator.proto",
                    "meshproxy", "guest.storage"},
}


def _imports(package: str) -> Iterator[tuple[Path, int, str, list[str]]]:
    for path in sorted((REPO / package).rglob("*.py")):
        if path.name.endswith("_pb2.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.lineno, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name, []


def _is_face(module: str) -> bool:
    if module in FACE_MODULES or module.endswith("_pb2"):
        return True
    if module.split(".")[0] == "common":
        return True  # every module of common is a face
    rel = Path(*module.split("."))
    return (REPO / rel / "__init__.py").is_file()


def _face_names(module: str) -> set[str]:
    imported = importlib.import_module(module)
    if module.endswith("_pb2"):
        return set(dir(imported))
    return set(getattr(imported, "__all__", ()))


def _is_submodule_face(module: str) -> bool:
    rel = REPO / Path(*module.split("."))
    return (rel / "__init__.py").is_file() or (_is_face(module) and rel.with_suffix(".py").is_file())


def _may_link(package: str, target: str) -> bool:
    allowed = ALLOWED.get(package)
    return allowed is None or any(target == a or target.startswith(a + ".") for a in allowed)


def check_import(package: str, module: str, names: list[str]) -> list[str]:
    """What is wrong with ``from module import names`` (``import module`` if no names) in ``package``."""
    top = module.split(".")[0]
    if top == package or top not in PACKAGES:
        return []
    if not _is_face(module):
        return [f"imports {module}, not a package face"]
    if not names:
        return [] if _may_link(package, module) else [f"imports {module}, outside what {package} may link"]
    problems = []
    for name in names:
        if _is_submodule_face(f"{module}.{name}"):
            target = f"{module}.{name}"  # a face submodule imported as a namespace
        elif name in _face_names(module):
            target = module
        else:
            problems.append(f"imports {name} from {module}, which does not export it")
            continue
        if not _may_link(package, target):
            problems.append(f"imports {target}, outside what {package} may link")
    return problems


def _violations(package: str) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} {problem}"
            for path, line, module, names in _imports(package)
            for problem in check_import(package, module, names)]


@pytest.mark.parametrize("package", PACKAGES)
def test_other_packages_import_only_face_names(package: str) -> None:
    assert _violations(package) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_face_name_resolves(package: str) -> None:
    faces = [package] + [m for m in FACE_MODULES if m.startswith(package + ".")]
    for face in faces:
        module = importlib.import_module(face)
        exported = getattr(module, "__all__", [])
        assert exported == sorted(set(exported), key=exported.index), f"{face}.__all__ repeats a name"
        for name in exported:
            assert getattr(module, name, None) is not None, f"{face}.__all__ names {name}, which is missing"
        lazy = getattr(module, "_EXPORTS", None)
        if lazy is not None:  # a PEP 562 face: the lazy map and __all__ are the same set of names
            assert set(lazy) == set(exported), f"{face}: _EXPORTS and __all__ differ"


@pytest.mark.parametrize(("package", "module", "names"), [
    ("initializer", "coordinator", ["rpc"]),              # Coordinator internals through the package
    ("initializer", "coordinator.store", ["FileStore"]),  # a module that is no face
    ("initializer", "coordinator.proto", ["NoSuchThing"]),
    ("coordinator", "attestation.atls.tunnel", ["Terminator"]),
    ("guest", "attestation", ["NoSuchName"]),
    ("attestation", "coordinator.proto", ["meshapi_pb2"]),  # layering: attestation is below the Coordinator
    ("common", "attestation", ["initdata"]),
])
def test_the_check_reports_internal_imports(package: str, module: str, names: list[str]) -> None:
    assert check_import(package, module, names) != []


def test_the_check_accepts_face_imports() -> None:
    assert check_import("initializer", "attestation.atls", ["Forwarder", "call"]) == []
    assert check_import("initializer", "attestation", ["testing"]) == []
    assert check_import("coordinator", "guest.policy", ["AgentPolicy"]) == []
    assert check_import("image", "attestation.snp", ["idblock"]) == []
    assert check_import("guest", "common", ["protoc"]) == []
