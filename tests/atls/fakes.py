"""A test issuer/validator pair (OID 1.3.9901.2.3, Contrast's "insecure" arc).

Evidence = b"FAKE" || measurement(16) || host_data(32) || report_data(64). The validator checks
the measurement and report data like a real one would, so tests can make either fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from attestation.atls import AtlsError, Verdict

FAKE_OID = x509.ObjectIdentifier("1.3.9901.2.3")


class FakeEvidenceError(AtlsError):
    pass


@dataclass
class FakeIssuer:
    measurement: bytes = b"M" * 16
    host_data: bytes = b"\x11" * 32
    replay: bytes | None = None  # when set, always returns this evidence (a replay attacker)

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return FAKE_OID

    def issue(self, report_data: bytes) -> bytes:
        if self.replay is not None:
            return self.replay
        return b"FAKE" + self.measurement + self.host_data + report_data


@dataclass
class FakeValidator:
    measurement: bytes = b"M" * 16

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return FAKE_OID

    def validate(self, evidence: bytes, report_data: bytes) -> Verdict:
        if len(evidence) != 4 + 16 + 32 + 64 or not evidence.startswith(b"FAKE"):
            raise FakeEvidenceError(f"evidence has {len(evidence)} bytes, expected 116 starting FAKE")
        if evidence[4:20] != self.measurement:
            got, want = evidence[4:20].hex(), self.measurement.hex()
            raise FakeEvidenceError(f"MEASUREMENT is {got}, expected {want}")
        if evidence[52:] != report_data:
            raise FakeEvidenceError("REPORT_DATA does not match the expected report data")
        return Verdict(platform="fake", host_data=evidence[20:52])
