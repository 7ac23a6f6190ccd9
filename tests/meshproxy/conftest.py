"""Fixtures of the mesh proxy tests: a Contrast-shaped PKI and the workloads' TLS directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from mesh_pki import MeshPKI


@pytest.fixture(scope="session")
def pki() -> MeshPKI:
    return MeshPKI.create("mesh")


@pytest.fixture(scope="session")
def other_pki() -> MeshPKI:
    """A second, unrelated mesh (e.g. another deployment): its certificates must be refused."""
    return MeshPKI.create("other")


@pytest.fixture(scope="session")
def tls_dirs(pki: MeshPKI, other_pki: MeshPKI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mesh-tls")
    return {
        "a": pki.write_workload(root / "a", "pod-a"),
        "b": pki.write_workload(root / "b", "pod-b"),
        "foreign": other_pki.write_workload(root / "foreign", "pod-b"),
    }
