"""The files the initializer leaves for the workload, written atomically with Contrast's exact modes.

    <out>/tls-config/mesh-ca.pem               0444
    <out>/tls-config/certChain.pem             0444  leaf PEM + intermediate PEM
    <out>/tls-config/key.pem                   0400  PKCS#8 "PRIVATE KEY"
    <out>/tls-config/coordinator-root-ca.pem   0444
    <out>/secrets/workload-secret-seed         0400  lower-case hex, no newline (only when non-empty)
    /done                                      0644  empty; the startup probe checks it

Directories are created with 0755. Each file goes to a temp file in the same directory, is fsynced
and renamed into place, so a reader never sees a partial file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.files import atomic_write, fsync_dir

__all__ = ["MeshMaterial", "write_done", "write_mesh_files"]


@dataclass(frozen=True)
class MeshMaterial:
    mesh_ca: bytes
    cert_chain: bytes
    root_ca: bytes
    workload_secret: bytes


def write_mesh_files(out: Path, key: ec.EllipticCurvePrivateKey, material: MeshMaterial) -> list[Path]:
    tls, secrets_dir = out / "tls-config", out / "secrets"
    for d in (tls, secrets_dir):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)  # noqa: S103 - every container of the pod reads these
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    plan = [
        (tls / "mesh-ca.pem", material.mesh_ca, 0o444),
        (tls / "certChain.pem", material.cert_chain, 0o444),
        (tls / "key.pem", key_pem, 0o400),
        (tls / "coordinator-root-ca.pem", material.root_ca, 0o444),
    ]
    if material.workload_secret:
        plan.append((secrets_dir / "workload-secret-seed", material.workload_secret.hex().encode(), 0o400))
    for path, data, mode in plan:
        atomic_write(path, data, mode=mode, sync_dir=False)
    for d in (tls, secrets_dir, out):  # one directory fsync each makes all renames durable
        fsync_dir(d)
    return [p for p, _, _ in plan]


def write_done(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, b"", mode=0o644)
