"""SNP (and the OIDs for TDX) behind the aTLS Issuer/Validator protocols, as thin adapters over the
attestation core.

Evidence encoding (Contrast): the SNP extension 1.3.9901.2.1 holds a protobuf `sevsnp.Attestation`
(report fields, VCEK/ASK/ARK DER, the CRL in ``certificate_chain.extras`` under
`CRL_EXTRA_KEY`, product). The raw report is rebuilt from the fields for signature checking; any
field that does not survive the round trip makes the signature fail, so nothing is trusted that the
AMD key did not sign.

A validator = decode -> verify signature and chain (attestation.snp.verify) -> check claims against
the manifest's reference values with the expected report data (attestation.api.check_snp) -> the
verdict (host data, claim extensions for the mesh certificate).
"""

from __future__ import annotations

import datetime
import functools
import struct
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import DecodeError

from attestation.api import check_snp
from attestation.atls.attest import Verdict
from attestation.atls.errors import AtlsError
from attestation.atls.proto import sevsnp_pb2
from attestation.errors import AttestationError
from attestation.evidence import Evidence, EvidenceProvider
from attestation.reference_values import SnpReferenceValues
from attestation.revocation import NoRevocationSource, RevocationSource
from attestation.snp import abi
from attestation.snp.certs import SnpCerts
from attestation.snp.product import Product, decompose_tcb
from attestation.snp.verify import SnpVerification, verify_snp_attestation
from attestation.trust import AmdRoots

SNP_OID = x509.ObjectIdentifier("1.3.9901.2.1")
TDX_OID = x509.ObjectIdentifier("1.3.9901.2.2")
INSECURE_OID = x509.ObjectIdentifier("1.3.9901.2.3")
CRL_EXTRA_KEY = "00569ee4-e480-4fba-bbf4-45b629901180"
MAX_EVIDENCE = 64 * 1024

_PRODUCT_ENUM = {
    Product.MILAN: sevsnp_pb2.SevProduct.SEV_PRODUCT_MILAN,
    Product.GENOA: sevsnp_pb2.SevProduct.SEV_PRODUCT_GENOA,
    Product.TURIN: sevsnp_pb2.SevProduct.SEV_PRODUCT_TURIN,
}


class EvidenceFormatError(AtlsError):
    """The evidence bytes do not decode as the platform's evidence message."""


class EvidenceRejectedError(AtlsError):
    """Verification or validation of decoded evidence failed; `step` says where."""

    def __init__(self, step: str, cause: Exception) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step


# -- CPUID(1).EAX <-> family/model/stepping (go-sev-guest's cpuid1eax_fms) ----------------------------
def fms_to_eax(family: int, model: int, stepping: int) -> int:
    base_family = min(family, 0xF)
    ext_family = family - 0xF if family >= 0xF else 0
    high = (ext_family << 20) | ((model >> 4) << 16)
    return high | (base_family << 8) | ((model & 0xF) << 4) | (stepping & 0xF)


def eax_to_fms(eax: int) -> tuple[int, int, int]:
    base_family = (eax >> 8) & 0xF
    family = base_family + ((eax >> 20) & 0xFF) if base_family == 0xF else base_family
    model = ((eax >> 16) & 0xF) << 4 | ((eax >> 4) & 0xF)
    return family, model, eax & 0xF


def _u64(b: bytes) -> int:
    return int.from_bytes(b, "little")


def report_to_proto(rep: abi.SnpReport) -> sevsnp_pb2.Report:
    msg = sevsnp_pb2.Report(
        version=rep.version, guest_svn=rep.guest_svn, policy=rep.policy, family_id=rep.family_id,
        image_id=rep.image_id, vmpl=rep.vmpl, signature_algo=rep.signature_algo,
        current_tcb=_u64(rep.current_tcb), platform_info=rep.platform_info, signer_info=rep.signer_info,
        report_data=rep.report_data, measurement=rep.measurement, host_data=rep.host_data,
        id_key_digest=rep.id_key_digest, author_key_digest=rep.author_key_digest, report_id=rep.report_id,
        report_id_ma=rep.report_id_ma, reported_tcb=_u64(rep.reported_tcb), chip_id=rep.chip_id,
        committed_tcb=_u64(rep.committed_tcb), current_build=rep.current_build,
        current_minor=rep.current_minor, current_major=rep.current_major,
        committed_build=rep.committed_build, committed_minor=rep.committed_minor,
        committed_major=rep.committed_major, launch_tcb=_u64(rep.launch_tcb),
        signature=rep.raw[0x2A0:0x4A0],
    )
    if rep.version >= 3 and rep.cpuid_fam_id is not None:
        msg.cpuid1eax_fms = fms_to_eax(rep.cpuid_fam_id, rep.cpuid_mod_id or 0, rep.cpuid_step or 0)
    if rep.version >= 5:
        msg.launch_mit_vector = rep.launch_mit_vector or 0
        msg.current_mit_vector = rep.current_mit_vector or 0
    return msg


def proto_to_report_bytes(msg: sevsnp_pb2.Report) -> bytes:
    """The 1184-byte report the fields describe (strictly re-parsed by the attestation core)."""
    if len(msg.signature) != 0x200:
        raise EvidenceFormatError(f"report signature has {len(msg.signature)} bytes, expected 512")
    fam, mod, step = eax_to_fms(msg.cpuid1eax_fms)
    v3, v5 = msg.version >= 3, msg.version >= 5
    rep = abi.SnpReport(
        version=msg.version, guest_svn=msg.guest_svn, policy=msg.policy, family_id=msg.family_id,
        image_id=msg.image_id, vmpl=msg.vmpl, signature_algo=msg.signature_algo,
        current_tcb=msg.current_tcb.to_bytes(8, "little"), platform_info=msg.platform_info,
        signer_info=msg.signer_info, report_data=msg.report_data, measurement=msg.measurement,
        host_data=msg.host_data, id_key_digest=msg.id_key_digest, author_key_digest=msg.author_key_digest,
        report_id=msg.report_id, report_id_ma=msg.report_id_ma,
        reported_tcb=msg.reported_tcb.to_bytes(8, "little"),
        cpuid_fam_id=fam if v3 else None, cpuid_mod_id=mod if v3 else None, cpuid_step=step if v3 else None,
        chip_id=msg.chip_id, committed_tcb=msg.committed_tcb.to_bytes(8, "little"),
        current_build=msg.current_build, current_minor=msg.current_minor, current_major=msg.current_major,
        committed_build=msg.committed_build, committed_minor=msg.committed_minor,
        committed_major=msg.committed_major, launch_tcb=msg.launch_tcb.to_bytes(8, "little"),
        launch_mit_vector=msg.launch_mit_vector if v5 else None,
        current_mit_vector=msg.current_mit_vector if v5 else None,
        signature_r=0, signature_s=0, raw=b"",
    )
    try:
        out = bytearray(abi.report_to_bytes(rep))
    except (AttestationError, ValueError, OverflowError, struct.error) as exc:
        raise EvidenceFormatError(f"report fields do not fit the report layout: {exc}") from exc
    out[0x2A0:0x4A0] = msg.signature
    return bytes(out)


def encode_snp(evidence: Evidence) -> bytes:
    """Evidence from a provider -> serialized `sevsnp.Attestation`."""
    rep = abi.parse_report(evidence.report)
    chain, product = _encode_chain(evidence.certs, evidence.cert_table, evidence.crl)
    att = sevsnp_pb2.Attestation(report=report_to_proto(rep))
    att.certificate_chain.CopyFrom(chain)
    if product is not None:
        att.product.name = _PRODUCT_ENUM[product]
        att.product.stepping = 0  # Contrast forces stepping 0
    return att.SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=16)
def _encode_chain(
    certs: tuple[bytes, ...], cert_table: bytes, crl: bytes | None
) -> tuple[sevsnp_pb2.CertificateChain, Product | None]:
    # A provider returns the same chain every time; parsing it once per chain saves ~0.5 ms a handshake.
    have = SnpCerts.from_blobs(certs)
    if cert_table:
        have = have.merge(SnpCerts.from_cert_table(cert_table))
    der = serialization.Encoding.DER
    chain = sevsnp_pb2.CertificateChain()
    if have.vcek is not None:
        chain.vcek_cert = have.vcek.public_bytes(der)
    if have.vlek is not None:
        chain.vlek_cert = have.vlek.public_bytes(der)
    if (have.ask or have.asvk) is not None:
        chain.ask_cert = (have.ask or have.asvk).public_bytes(der)  # type: ignore[union-attr]
    if have.ark is not None:
        chain.ark_cert = have.ark.public_bytes(der)
    if crl:
        chain.extras[CRL_EXTRA_KEY] = crl
    return chain, _product_of(have)


def _product_of(have: SnpCerts) -> Product | None:
    from attestation.snp.certs import role_of

    for cert in (have.ark, have.ask, have.asvk):
        if cert is not None:
            _role, product = role_of(cert)
            if product is not None:
                return product
    return None


def decode_snp(data: bytes) -> tuple[bytes, list[bytes], bytes | None]:
    """Serialized `sevsnp.Attestation` -> (raw report, certificate DERs, CRL or None)."""
    if len(data) > MAX_EVIDENCE:
        raise EvidenceFormatError(f"SNP evidence has {len(data)} bytes, limit {MAX_EVIDENCE}")
    att = sevsnp_pb2.Attestation()
    try:
        att.ParseFromString(data)
    except DecodeError as exc:
        raise EvidenceFormatError(f"SNP evidence is not a sevsnp.Attestation message: {exc}") from exc
    if not att.HasField("report"):
        raise EvidenceFormatError("SNP evidence has no report")
    chain = att.certificate_chain
    certs = [c for c in (chain.vcek_cert, chain.vlek_cert, chain.ask_cert, chain.ark_cert) if c]
    crl = chain.extras.get(CRL_EXTRA_KEY)
    return proto_to_report_bytes(att.report), certs, crl


class SnpIssuer:
    """Issues SNP evidence from an attestation-core provider (real device or simulator)."""

    def __init__(self, provider: EvidenceProvider) -> None:
        if provider.platform != "snp":
            raise ValueError(f"SnpIssuer needs an SNP provider, got {provider.platform}")
        self._provider = provider

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return SNP_OID

    def issue(self, report_data: bytes) -> bytes:
        return encode_snp(self._provider.get_evidence(report_data))


def issuer_for(provider: EvidenceProvider) -> SnpIssuer | Any:
    """The aTLS issuer for a provider's platform (SNP or TDX)."""
    if provider.platform == "tdx":
        from attestation.atls.tdx import TdxIssuer

        return TdxIssuer(provider)
    return SnpIssuer(provider)


class SnpValidator:
    """Checks SNP evidence against a list of reference values (any entry may match).

    `host_data` pins HOST_DATA (the CLI pins the Coordinator's policy hash); `trusted_roots` adds
    roots beyond the bundled AMD ones (a simulator's, explicitly). The CRL comes from `revocation`
    only, never from the evidence (the attester could leave it out or send an older one); without a
    CRL from it the evidence is refused.
    """

    def __init__(
        self,
        reference_values: Sequence[SnpReferenceValues],
        *,
        revocation: RevocationSource | None = None,
        trusted_roots: AmdRoots | None = None,
        host_data: bytes | None = None,
        now: datetime.datetime | None = None,
    ) -> None:
        self._rvs = tuple(reference_values)
        self._revocation = revocation or NoRevocationSource()
        self._roots = trusted_roots
        self._host_data = host_data
        self._now = now

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return SNP_OID

    def validate(self, evidence: bytes, report_data: bytes) -> Verdict:
        raw, certs, _untrusted_crl = decode_snp(evidence)
        try:
            verification = verify_snp_attestation(
                raw, certs, trusted_roots=self._roots, revocation=self._revocation,
                require_revocation=True, now=self._now,
            )
        except AttestationError as exc:
            raise EvidenceRejectedError("verifying report", exc) from exc
        try:
            check_snp(verification, self._rvs, report_data=report_data, host_data=self._host_data)
        except AttestationError as exc:
            raise EvidenceRejectedError("validating report", exc) from exc
        host_data = verification.report.host_data
        return Verdict(platform="snp", host_data=host_data, claims=snp_claims(verification))


# -- claim extensions for mesh certificates (arc 1.3.9901.2.1.N) ----------------------------------------
def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=False)
    return b"\x02" + _der_len(len(body)) + body


def _der_bytes(value: bytes) -> bytes:
    return b"\x04" + _der_len(len(value)) + value


def _der_bool(value: bool) -> bytes:
    return b"\x01\x01" + (b"\xff" if value else b"\x00")


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def snp_claims(v: SnpVerification) -> tuple[x509.Extension[x509.ExtensionType], ...]:
    r, product = v.report, v.product
    policy, plat, signer = r.guest_policy, r.platform, r.signer
    cur, rep_tcb = decompose_tcb(r.current_tcb, product), decompose_tcb(r.reported_tcb, product)
    com, launch = decompose_tcb(r.committed_tcb, product), decompose_tcb(r.launch_tcb, product)
    values: list[bytes] = [
        _der_int(r.version), _der_int(r.guest_svn), _der_int(policy.abi_major), _der_int(policy.abi_minor),
        _der_bool(policy.debug), _der_bool(policy.migrate_ma), _der_bool(policy.smt),
        _der_bool(policy.single_socket), _der_bytes(r.family_id), _der_bytes(r.image_id), _der_int(r.vmpl),
        _der_int(cur.bl), _der_int(cur.snp), _der_int(cur.tee), _der_int(cur.ucode),
        _der_bool(plat.smt_enabled), _der_bool(plat.tsme_enabled),
        _der_bool(signer.author_key_en), _der_bool(signer.mask_chip_key), _der_int(int(signer.signing_key)),
        _der_bytes(r.report_data), _der_bytes(r.measurement), _der_bytes(r.host_data),
        _der_bytes(r.id_key_digest), _der_bytes(r.author_key_digest), _der_bytes(r.report_id),
        _der_bytes(r.report_id_ma), _der_int(rep_tcb.bl), _der_int(rep_tcb.snp), _der_int(rep_tcb.tee),
        _der_int(rep_tcb.ucode), _der_bytes(r.chip_id),
        _der_int(com.bl), _der_int(com.snp), _der_int(com.tee), _der_int(com.ucode),
        _der_int(r.current_build), _der_int(r.current_minor), _der_int(r.current_major),
        _der_int(r.committed_build), _der_int(r.committed_minor), _der_int(r.committed_major),
        _der_int(launch.bl), _der_int(launch.snp), _der_int(launch.tee), _der_int(launch.ucode),
    ]
    return tuple(
        x509.Extension(oid, False, x509.UnrecognizedExtension(oid, der))
        for oid, der in zip(_CLAIM_OIDS, values, strict=True)
    )


_CLAIM_OIDS = tuple(x509.ObjectIdentifier(f"{SNP_OID.dotted_string}.{n}") for n in range(1, 47))
