"""The self-signed aTLS certificate: CN=Contrast, +-2 h validity, evidence in one platform-OID extension.

The extension value is the raw evidence (no extra ASN.1 wrapping), like Go's ``ExtraExtensions``.
"""

from __future__ import annotations

import datetime
import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from attestation.atls.errors import PeerCertificateError

SUBJECT_CN = "Contrast"
VALIDITY = datetime.timedelta(hours=2)
# Every attestation evidence extension lives under this arc (SNP .1, TDX .2, insecure .3).
EVIDENCE_ARC = "1.3.9901.2."

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def build(key: SigningKey, evidence: list[tuple[x509.ObjectIdentifier, bytes]]) -> x509.Certificate:
    """A fresh self-signed certificate for `key` with one extension per (OID, evidence)."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SUBJECT_CN)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(127) | 1)
        .not_valid_before(now - VALIDITY)
        .not_valid_after(now + VALIDITY)
    )
    for oid, value in evidence:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else _hash_for(key)
    return builder.sign(key, algorithm)


def _hash_for(key: SigningKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def spki_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_spki_der(key: SigningKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_self_signed(cert: x509.Certificate, now: datetime.datetime | None = None) -> None:
    """The peer certificate must be correctly self-signed and inside its validity window."""
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        reason = str(exc) or type(exc).__name__
        raise PeerCertificateError(f"peer certificate is not correctly self-signed: {reason}") from exc
    now = now or datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PeerCertificateError(
            f"peer certificate valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
            f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, now is {now:%Y-%m-%dT%H:%M:%SZ}"
        )


def evidence_extensions(cert: x509.Certificate) -> list[tuple[x509.ObjectIdentifier, bytes]]:
    """(OID, raw evidence) for every extension under the attestation arc."""
    found: list[tuple[x509.ObjectIdentifier, bytes]] = []
    for ext in cert.extensions:
        if not ext.oid.dotted_string.startswith(EVIDENCE_ARC):
            continue
        value = ext.value
        if isinstance(value, x509.UnrecognizedExtension):
            found.append((ext.oid, value.value))
    return found
