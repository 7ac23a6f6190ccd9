"""CRLs for the simulators (SNP's simulated ARK, TDX's simulated Intel CAs): one builder for both."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


def build_crl(
    issuer: x509.Name,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    revoked: Iterable[int],
    *,
    this_update: _dt.datetime,
    next_update: _dt.datetime,
    revoked_at: _dt.datetime,
    algorithm: hashes.SHA256 | hashes.SHA384,
    rsa_padding: padding.PSS | None = None,
) -> bytes:
    """A DER CRL from `issuer` listing the `revoked` serial numbers."""
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(this_update)
        .next_update(next_update)
    )
    for serial in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at).build()
        )
    crl = b.sign(key, algorithm, rsa_padding=rsa_padding) if rsa_padding else b.sign(key, algorithm)
    return crl.public_bytes(serialization.Encoding.DER)
