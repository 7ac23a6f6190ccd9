"""A Contrast-shaped test PKI made with cryptography.

Root (P-384, self-signed) -> intermediate (mesh CA key, signed by root); mesh CA = same name and key,
self-signed; leaves (P-256) signed by the mesh CA key, so they chain to mesh-ca.pem directly or via the
intermediate to the root. ``certChain.pem`` = leaf + intermediate, ``key.pem`` = PKCS#8, as the
initializer writes them.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256() if isinstance(issuer_key.curve, ec.SECP256R1) else hashes.SHA384())
    )


@dataclass
class MeshPKI:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    mesh_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    mesh_ca: x509.Certificate

    @classmethod
    def create(cls, label: str = "test") -> MeshPKI:
        root_key = ec.generate_private_key(ec.SECP384R1())
        mesh_key = ec.generate_private_key(ec.SECP384R1())
        root = _ca_cert(
            f"system:coordinator:root:{label}", root_key, f"system:coordinator:root:{label}", root_key
        )
        inter_name = f"system:coordinator:intermediate:{label}"
        intermediate = _ca_cert(inter_name, mesh_key, root.subject.rfc4514_string()[3:], root_key)
        mesh_ca = _ca_cert(inter_name, mesh_key, inter_name, mesh_key)
        return cls(root_key, root, mesh_key, intermediate, mesh_ca)

    def next_generation(self, label: str) -> MeshPKI:
        """A new mesh CA under the same root, as after a manifest update: leaves of the new generation
        chain to the root but not to the old mesh CA."""
        mesh_key = ec.generate_private_key(ec.SECP384R1())
        inter_name = f"system:coordinator:intermediate:{label}"
        root_name = self.root.subject.rfc4514_string()[3:]
        intermediate = _ca_cert(inter_name, mesh_key, root_name, self.root_key)
        mesh_ca = _ca_cert(inter_name, mesh_key, inter_name, mesh_key)
        return MeshPKI(self.root_key, self.root, mesh_key, intermediate, mesh_ca)

    def leaf(
        self,
        dns: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns))
            .issuer_name(self.mesh_ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.mesh_key.public_key()), critical=False
            )
            .sign(self.mesh_key, hashes.SHA384())
        )
        return cert, key

    def write_workload(self, directory: Path, dns: str) -> Path:
        """Write the initializer's files for one workload into ``directory`` (atomically per file)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.leaf(dns)
        files = {
            "mesh-ca.pem": self.mesh_ca.public_bytes(PEM),
            "certChain.pem": cert.public_bytes(PEM) + self.intermediate.public_bytes(PEM),
            "key.pem": key.private_bytes(
                PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "coordinator-root-ca.pem": self.root.public_bytes(PEM),
        }
        for name, data in files.items():
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, directory / name)
        return directory
