"""The Coordinator's own measured identity: its policy hash (HOST_DATA, or MRCONFIGID[:32] on TDX) as
its own evidence reports it, and the owner anchor of its initdata document once that document is shown
to be the one the evidence names.

A peer Coordinator must run this same policy, and the initdata document given on the command line
counts only if it hashes to this value: both come from the hardware, not from the host's disk.
"""

from __future__ import annotations

from attestation.atls import Issuer
from attestation.atls.platforms import SNP_OID, TDX_OID, decode_snp
from attestation.atls.tdx import decode_tdx
from attestation.initdata import digest as initdata_digest
from attestation.initdata import platform_digest
from attestation.snp.abi import parse_report
from attestation.tdx.quote import parse_quote
from coordinator.errors import OwnerAnchorError
from coordinator.owners import OwnerAnchor

POLICY_HASH_SIZE = 32


def own_policy_hash(issuer: Issuer) -> bytes:
    """The policy hash in this Coordinator's own launch evidence."""
    evidence = issuer.issue(bytes(64))
    if issuer.oid == SNP_OID:
        raw, _certs, _crl = decode_snp(evidence)
        return bytes(parse_report(raw).host_data)
    if issuer.oid == TDX_OID:
        return bytes(parse_quote(decode_tdx(evidence)).body.mr_config_id[:POLICY_HASH_SIZE])
    raise OwnerAnchorError(f"no policy hash in evidence of type {issuer.oid.dotted_string}")


def anchor_from_initdata(raw: bytes, policy_hash: bytes) -> OwnerAnchor | None:
    """The owner anchor of `raw`, after checking that `raw` is this Coordinator's own initdata."""
    found = platform_digest(initdata_digest(raw), POLICY_HASH_SIZE)
    if found != policy_hash:
        raise OwnerAnchorError(
            f"the initdata document hashes to {found.hex()}, but this Coordinator was launched with "
            f"policy {policy_hash.hex()}: it is not this Coordinator's initdata")
    return OwnerAnchor.from_initdata(raw)
