"""The Coordinator's own measured identity: its policy hash (HOST_DATA, or MRCONFIGID[:32] on TDX) as
its own evidence reports it, and the owner anchor of its initdata document once that document is shown
to be the one the evidence names.

A peer Coordinator must run this same policy, and the initdata document given on the command line
counts only if it hashes to this value: both come from the hardware, not from the host's disk. A peer
must also have been launched with this Coordinator's own measurement (SNP MEASUREMENT; TDX MRTD and
RTMR0-3), whatever reference values the persisted manifest carries: `SameLaunchValidator`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from attestation import parse_quote, parse_report
from attestation.atls import (
    SNP_OID,
    TDX_OID,
    EvidenceRejectedError,
    Issuer,
    Validator,
    Verdict,
    decode_snp,
    decode_tdx,
)
from attestation.initdata import digest as initdata_digest
from attestation.initdata import platform_digest
from coordinator.errors import OwnerAnchorError
from coordinator.owners import OwnerAnchor

POLICY_HASH_SIZE = 32


@dataclass(frozen=True)
class LaunchIdentity:
    policy_hash: bytes
    measurement: bytes


def launch_identity(oid: x509.ObjectIdentifier, evidence: bytes) -> LaunchIdentity:
    """Policy hash and launch measurement named by `evidence` (parsed only, not verified)."""
    if oid == SNP_OID:
        raw, _certs, _crl = decode_snp(evidence)
        report = parse_report(raw)
        return LaunchIdentity(bytes(report.host_data), bytes(report.measurement))
    if oid == TDX_OID:
        body = parse_quote(decode_tdx(evidence)).body
        return LaunchIdentity(bytes(body.mr_config_id[:POLICY_HASH_SIZE]), body.mr_td + b"".join(body.rtmrs))
    raise OwnerAnchorError(f"no launch identity in evidence of type {oid.dotted_string}")


def own_identity(issuer: Issuer) -> LaunchIdentity:
    """This Coordinator's own policy hash and launch measurement, from its own evidence."""
    return launch_identity(issuer.oid, issuer.issue(bytes(64)))


def own_policy_hash(issuer: Issuer) -> bytes:
    return own_identity(issuer).policy_hash


class SameLaunchValidator:
    """Wraps a validator: after `inner` has verified the evidence, the peer must also carry exactly
    `own`'s policy hash and launch measurement (a peer Coordinator is a replica of this one)."""

    def __init__(self, inner: Validator, own: LaunchIdentity) -> None:
        self._inner = inner
        self._own = own

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return self._inner.oid

    def validate(self, evidence: bytes, report_data: bytes) -> Verdict:
        verdict = self._inner.validate(evidence, report_data)
        peer = launch_identity(self.oid, evidence)
        if peer.measurement != self._own.measurement:
            raise EvidenceRejectedError(
                "checking the peer is a replica",
                ValueError(f"launch measurement is {peer.measurement.hex()}, this Coordinator's is "
                           f"{self._own.measurement.hex()}"))
        if peer.policy_hash != self._own.policy_hash:
            raise EvidenceRejectedError(
                "checking the peer is a replica",
                ValueError(f"policy hash is {peer.policy_hash.hex()}, this Coordinator's is "
                           f"{self._own.policy_hash.hex()}"))
        return verdict


def anchor_from_initdata(raw: bytes, policy_hash: bytes) -> OwnerAnchor | None:
    """The owner anchor of `raw`, after checking that `raw` is this Coordinator's own initdata."""
    found = platform_digest(initdata_digest(raw), POLICY_HASH_SIZE)
    if found != policy_hash:
        raise OwnerAnchorError(
            f"the initdata document hashes to {found.hex()}, but this Coordinator was launched with "
            f"policy {policy_hash.hex()}: it is not this Coordinator's initdata")
    return OwnerAnchor.from_initdata(raw)
