"""Issuer and Validator protocols and the peer check that ties them together.

Shaped like Contrast's internal/atls: an issuer makes evidence over given report data; validators are
matched to evidence extensions by OID and tried in turn, the first success wins, every failure is
reported.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography import x509

from attestation.atls import certificate, wire
from attestation.atls.errors import AtlsError, NoMatchingValidatorsError, NoValidAttestationExtensionsError


@dataclass(frozen=True)
class Verdict:
    """What a validator learned: the platform, the 32-byte host data (policy hash) and claims.

    `claims` are non-critical extensions the Coordinator copies into the peer's mesh certificate.
    """

    platform: str
    host_data: bytes
    claims: tuple[x509.Extension[x509.ExtensionType], ...] = ()


@runtime_checkable
class Issuer(Protocol):
    @property
    def oid(self) -> x509.ObjectIdentifier: ...

    def issue(self, report_data: bytes) -> bytes:
        """Raw evidence whose report data equals `report_data` (64 bytes)."""
        ...


@runtime_checkable
class Validator(Protocol):
    @property
    def oid(self) -> x509.ObjectIdentifier: ...

    def validate(self, evidence: bytes, report_data: bytes) -> Verdict:
        """Check evidence against reference values and the expected report data; raise on failure."""
        ...


@dataclass(frozen=True)
class Peer:
    """The other side of a finished handshake: its certificate, key and (when checked) its verdict."""

    certificate: x509.Certificate
    spki_der: bytes
    verdict: Verdict | None = None
    alpn: bytes | None = None


def check_peer(
    cert: x509.Certificate, nonce: bytes, validators: list[Validator], now: datetime.datetime | None = None
) -> Verdict:
    """Contrast's peer check: self-signed, then every extension against validators with its OID."""
    certificate.check_self_signed(cert, now)
    extensions = certificate.evidence_extensions(cert)
    if not extensions:
        raise NoValidAttestationExtensionsError()
    expected = wire.report_data(certificate.spki_der(cert), nonce)
    failures: list[str] = []
    for oid, evidence in extensions:
        for validator in validators:
            if validator.oid != oid:
                continue
            try:
                return validator.validate(evidence, expected)
            except AtlsError as exc:
                failures.append(f"{type(validator).__name__}: {exc}")
            except ValueError as exc:  # validators built on parsers raise ValueError subclasses
                failures.append(f"{type(validator).__name__}: {exc}")
    raise NoMatchingValidatorsError(nonce, failures)
