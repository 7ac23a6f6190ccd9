"""Evidence as it leaves a guest, and the provider interface that produces it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Platform = Literal["snp", "tdx"]
REPORT_DATA_SIZE = 64


@dataclass(frozen=True)
class Evidence:
    """Raw evidence from one provider.

    `report` is the 1184-byte SNP report or the TDX quote, byte-exact as the TEE produced it.
    For SNP, `cert_table` is the extended-report certificate table (GHCB layout, configfs
    auxblob) when the host supplied one, and `certs` any certificates (DER) the provider knows
    of (VCEK/VLEK, ASK/ASVK, ARK); verifiers treat both as untrusted hints.
    """

    platform: Platform
    report: bytes
    cert_table: bytes = b""
    certs: tuple[bytes, ...] = ()
    crl: bytes | None = None
    provider: str = ""
    extra: dict[str, bytes] = field(default_factory=dict)


@runtime_checkable
class EvidenceProvider(Protocol):
    """Something that can produce attestation evidence binding 64 bytes of report data."""

    @property
    def platform(self) -> Platform: ...

    def get_evidence(self, report_data: bytes) -> Evidence: ...


def pad_report_data(report_data: bytes) -> bytes:
    """Report data is exactly 64 bytes; shorter input is zero-padded (as the kernel expects)."""
    if len(report_data) > REPORT_DATA_SIZE:
        raise ValueError(f"report data is {len(report_data)} bytes, at most {REPORT_DATA_SIZE} allowed")
    return bytes(report_data).ljust(REPORT_DATA_SIZE, b"\0")
