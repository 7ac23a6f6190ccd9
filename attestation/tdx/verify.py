"""TDX verification: PCK chain to the pinned Intel root, quote and QE-report signatures, the QE
report's binding to the attestation key, and (when given) collateral with dates and TCB status.

Order follows go-tdx-guest's `verify.TdxQuote`. Policy on the TD's claims
(MRTD, RTMRs, DEBUG, report data) is `validate`'s job.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import SignatureAlgorithmOID

from ..errors import (
    CertificateError,
    CertificateExpiredError,
    CollateralError,
    RevokedError,
    SignatureError,
    TcbStatusError,
)
from ..revocation import RevocationSource, RevocationUnavailableError, pck_ca_type, require_crls
from ..snp.certs import common_name, load_certificates, serial_of
from ..snp.verify import check_validity, load_crl
from ..trust import bundled_intel_root
from .collateral import (
    QeIdentity,
    TcbEvaluation,
    TcbInfo,
    TdxCollateral,
    evaluate_qe_tcb,
    evaluate_tcb,
    parse_qe_identity,
    parse_tcb_info,
)
from .pck import PckChain, PckExtensions, parse_pck_chain, parse_pck_extensions
from .quote import TdxQuote, parse_quote

ROOT_CN = "Intel SGX Root CA"
PCK_CN = "Intel SGX PCK Certificate"
INTERMEDIATE_CNS = ("Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA")
TCB_SIGNING_CN = "Intel SGX TCB Signing"


@dataclass(frozen=True)
class TdxVerification:
    quote: TdxQuote
    chain: PckChain
    pck: PckExtensions
    tcb: TcbEvaluation | None
    qe_tcb_status: str | None
    tcb_info: TcbInfo | None
    qe_identity: QeIdentity | None
    checks: tuple[str, ...]

    @property
    def tcb_status(self) -> str:
        return self.tcb.status if self.tcb is not None else "not evaluated"


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _raw_sig(sig: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"))


def _p256_verify(key: ec.EllipticCurvePublicKey, sig: bytes, message: bytes) -> bool:
    try:
        key.verify(_raw_sig(sig), message, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=512)
def _p256_key(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateError(f"{what} key is not ECDSA P-256", step="chain")
    return key


@functools.lru_cache(maxsize=512)
def _names(cert: x509.Certificate) -> tuple[x509.Name, x509.Name]:
    return cert.subject, cert.issuer


def _link(child: x509.Certificate, parent: x509.Certificate, what: str) -> None:
    if child.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise CertificateError(f"{what} is not signed with ECDSA-SHA256", step="chain")
    issuer, subject = _names(child)[1], _names(parent)[0]
    if issuer != subject:
        raise CertificateError(
            f"{what} issuer {issuer.rfc4514_string()!r} is not {subject.rfc4514_string()!r}", step="chain"
        )
    # All Intel links are ECDSA-SHA256 (checked above): verify the TBS bytes directly.
    key = _p256_key(parent, what)
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, _ECDSA_SHA256)
    except InvalidSignature:
        raise CertificateError(
            f"certificate signature verification using parent certificate failed ({what})", step="chain"
        ) from None


def _check_root(root: x509.Certificate, trusted: x509.Certificate, what: str) -> None:
    if root != trusted:
        raise CertificateError(f"{what} does not end in the trusted Intel SGX Root CA", step="chain")


@functools.lru_cache(maxsize=256)
def _ca(cert: x509.Certificate, what: str) -> None:
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertificateError(f"{what} is not a CA", step="chain")
    except x509.ExtensionNotFound:
        raise CertificateError(f"{what} has no BasicConstraints", step="chain") from None


def verify_pck_chain(chain: PckChain, root: x509.Certificate, now: _dt.datetime) -> None:
    if common_name(chain.leaf.subject) != PCK_CN:
        raise CertificateError(
            f"PCK leaf CN is {common_name(chain.leaf.subject)!r}, expected {PCK_CN!r}", step="chain"
        )
    if common_name(chain.intermediate.subject) not in INTERMEDIATE_CNS:
        raise CertificateError(
            f"PCK intermediate CN is {common_name(chain.intermediate.subject)!r}", step="chain"
        )
    _check_root(chain.root, root, "PCK chain")
    for cert, what in (
        (chain.leaf, "PCK leaf"),
        (chain.intermediate, "PCK intermediate"),
        (chain.root, "root"),
    ):
        if cert.version is not x509.Version.v3:
            raise CertificateError(f"{what} is not X.509 v3", step="chain")
        _p256_key(cert, what)
    # chain.root is byte-identical to the pinned root: its self-signature needs no re-check.
    _link(chain.intermediate, root, "Intermediate CA certificate")
    _link(chain.leaf, chain.intermediate, "PCK leaf certificate")
    _ca(chain.intermediate, "PCK intermediate")
    for cert, what in (
        (chain.leaf, "PCK leaf"),
        (chain.intermediate, "PCK intermediate"),
        (root, "Intel root"),
    ):
        check_validity(cert, now, what)


@functools.lru_cache(maxsize=64)
def _crl_and_issuer(data: bytes, what: str) -> tuple[x509.CertificateRevocationList, x509.Name]:
    crl = load_crl(data, what)
    return crl, crl.issuer


def _check_crl(
    data: bytes, issuer: x509.Certificate, cert: x509.Certificate, now: _dt.datetime, what: str
) -> None:
    crl, crl_issuer = _crl_and_issuer(bytes(data), what)
    subject = _names(issuer)[0]
    if crl_issuer != subject:
        raise CollateralError(
            f"{what} issuer {crl_issuer.rfc4514_string()!r} is not {subject.rfc4514_string()!r}", step="crl"
        )
    if crl.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise SignatureError(f"{what} is not signed with ECDSA-SHA256", step="crl")
    try:
        _p256_key(issuer, what).verify(crl.signature, crl.tbs_certlist_bytes, _ECDSA_SHA256)
    except InvalidSignature:
        raise SignatureError(f"{what} signature does not verify", step="crl") from None
    if now < crl.last_update_utc or (crl.next_update_utc is not None and now > crl.next_update_utc):
        raise CertificateExpiredError(f"{what} is not valid at {now.isoformat()}", step="crl")
    entry = crl.get_revoked_certificate_by_serial_number(serial_of(cert))
    if entry is not None:
        raise RevokedError(f"{common_name(cert.subject)!r} is revoked by the {what}", step="crl")


def _signing_cert(
    chain_pem: bytes, root: x509.Certificate, now: _dt.datetime, what: str
) -> ec.EllipticCurvePublicKey:
    certs = load_certificates(chain_pem)
    if len(certs) != 2:
        raise CollateralError(
            f"{what} issuer chain must hold 2 certificates, got {len(certs)}", step="collateral"
        )
    signer, chain_root = certs
    if common_name(signer.subject) != TCB_SIGNING_CN:
        raise CollateralError(f"{what} signer CN is {common_name(signer.subject)!r}", step="collateral")
    _check_root(chain_root, root, f"{what} issuer chain")
    _link(signer, root, f"{what} signing certificate")
    check_validity(signer, now, f"{what} signing")
    return _p256_key(signer, what)


def _dates(issue: _dt.datetime, next_update: _dt.datetime, now: _dt.datetime, what: str) -> None:
    if now < issue:
        raise CertificateExpiredError(
            f"{what} is not yet valid (issued {issue.isoformat()})", step="collateral"
        )
    if now > next_update:
        raise CertificateExpiredError(
            f"{what} has expired (nextUpdate {next_update.isoformat()})", step="collateral"
        )


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def verify_collateral(
    q: TdxQuote,
    chain: PckChain,
    pck: PckExtensions,
    col: TdxCollateral,
    root: x509.Certificate,
    now: _dt.datetime,
    accepted: tuple[str, ...],
    checks: list[str],
) -> tuple[TcbEvaluation, str, TcbInfo, QeIdentity]:
    tcb_info = parse_tcb_info(col.tcb_info)
    qe_id = parse_qe_identity(col.qe_identity)
    tcb_key = _signing_cert(col.tcb_info_issuer_chain, root, now, "tcbInfo")
    if not _p256_verify(tcb_key, tcb_info.signature, tcb_info.signed_body):
        raise SignatureError("tcbInfo signature does not verify", step="collateral")
    # PCS serves both documents with the same issuer chain; check it once.
    if col.qe_identity_issuer_chain == col.tcb_info_issuer_chain:
        qe_key = tcb_key
    else:
        qe_key = _signing_cert(col.qe_identity_issuer_chain, root, now, "QE identity")
    if not _p256_verify(qe_key, qe_id.signature, qe_id.signed_body):
        raise SignatureError("QE identity signature does not verify", step="collateral")
    _dates(tcb_info.issue_date, tcb_info.next_update, now, "tcbInfo")
    _dates(qe_id.issue_date, qe_id.next_update, now, "QE identity")
    checks.append("collateral_signatures")
    if col.root_crl is not None:
        _check_crl(col.root_crl, root, chain.intermediate, now, "root CRL")
        checks.append("root_crl")
    if col.pck_crl is not None:
        if col.pck_crl_issuer_chain is not None:
            issuer_chain = load_certificates(col.pck_crl_issuer_chain)
            if not issuer_chain or issuer_chain[0] != chain.intermediate:
                raise CollateralError(
                    "PCK CRL issuer chain does not match the quote's PCK intermediate", step="crl"
                )
        _check_crl(col.pck_crl, chain.intermediate, chain.leaf, now, "PCK CRL")
        checks.append("pck_crl")
    body = q.body
    if tcb_info.fmspc != pck.fmspc:
        raise CollateralError(
            f"FMSPC is {pck.fmspc.hex()}, the TCB info is for {tcb_info.fmspc.hex()}", step="tcb_info"
        )
    if tcb_info.pce_id != pck.pce_id:
        raise CollateralError(
            f"PCEID is {pck.pce_id.hex()}, the TCB info is for {tcb_info.pce_id.hex()}", step="tcb_info"
        )
    if body.mr_signer_seam != tcb_info.module_mr_signer:
        raise CollateralError("MRSIGNERSEAM does not match tdxModule.mrsigner", step="tcb_info")
    if _masked(body.seam_attributes, tcb_info.module_attributes_mask) != tcb_info.module_attributes:
        raise CollateralError("SEAMATTRIBUTES do not match tdxModule.attributes", step="tcb_info")
    evaluation = evaluate_tcb(body.tee_tcb_svn, pck.tcb_components, pck.pce_svn, tcb_info)
    qr = q.qe_report
    if qr.misc_select & qe_id.misc_select_mask != qe_id.misc_select:
        raise CollateralError(
            f"MISCSELECT value({qr.misc_select}) & MISCSELECTMask does not equal {qe_id.misc_select}",
            step="qe_identity",
        )
    if _masked(qr.attributes, qe_id.attributes_mask) != qe_id.attributes:
        raise CollateralError("QE ATTRIBUTES do not match the QE identity", step="qe_identity")
    if qr.mr_signer != qe_id.mr_signer:
        raise CollateralError(
            f"QE MRSIGNER is {qr.mr_signer.hex()}, expected {qe_id.mr_signer.hex()}", step="qe_identity"
        )
    if qr.isv_prod_id != qe_id.isv_prod_id:
        raise CollateralError(
            f"QE ISVPRODID is {qr.isv_prod_id}, expected {qe_id.isv_prod_id}", step="qe_identity"
        )
    qe_level = evaluate_qe_tcb(qr.isv_svn, qe_id)
    checks.append("collateral_match")
    if qe_level.tcb_status not in accepted:
        raise TcbStatusError(
            f"QE TCB status is {qe_level.tcb_status}", status=qe_level.tcb_status, step="qe_tcb_status"
        )
    if evaluation.status not in accepted:
        raise TcbStatusError(
            f"TDX TCB status is {evaluation.status} (accepted: {', '.join(accepted)})",
            status=evaluation.status,
        )
    checks.append("tcb_status")
    return evaluation, qe_level.tcb_status, tcb_info, qe_id


def verify_tdx_quote(
    quote: bytes | TdxQuote,
    *,
    collateral: TdxCollateral | None = None,
    now: _dt.datetime | None = None,
    trusted_root: x509.Certificate | None = None,
    accepted_tcb_statuses: tuple[str, ...] = ("UpToDate",),
    revocation: RevocationSource | None = None,
    require_revocation: bool = False,
) -> TdxVerification:
    """Verify a TDX quote fully; with `collateral` (or, when None, what `revocation` returns for the
    PCK's FMSPC and CA), also TCB info, QE identity, CRLs and TCB status.

    `require_revocation=True` refuses a quote without collateral or with collateral lacking the PCK
    or root CRL: every verifier that decides admission passes it.
    """
    checks: list[str] = []
    q = quote if isinstance(quote, TdxQuote) else parse_quote(quote)
    checks.append("quote_format")
    when = now or _dt.datetime.now(_dt.UTC)
    if when.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    root = trusted_root or bundled_intel_root()
    chain = parse_pck_chain(q.pck_chain_pem)
    pck = parse_pck_extensions(chain.leaf)
    verify_pck_chain(chain, root, when)
    checks.append("pck_chain")
    try:
        ak = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + q.attestation_key)
    except ValueError:
        raise SignatureError("attestation key is not a valid P-256 point", step="quote_signature") from None
    if not _p256_verify(ak, q.signature, q.signed_bytes):
        raise SignatureError(
            "unable to verify message digest using quote's signature and ecdsa attestation key",
            step="quote_signature",
        )
    checks.append("quote_signature")
    if not _p256_verify(_p256_key(chain.leaf, "PCK leaf"), q.qe_report_signature, q.qe_report.raw):
        raise SignatureError(
            "QE report signature does not verify with the PCK key", step="qe_report_signature"
        )
    checks.append("qe_report_signature")
    want = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest() + bytes(32)
    if q.qe_report.report_data != want:
        raise SignatureError(
            "QE report data does not bind the attestation key (SHA-256(AK || auth data))", step="qe_binding"
        )
    checks.append("qe_binding")
    evaluation = qe_status = tcb_info = qe_id = None
    if collateral is None and revocation is not None:
        ca = pck_ca_type(common_name(chain.intermediate.subject))
        collateral = revocation.tdx_collateral(pck.fmspc, ca, now=when)
    if require_revocation:
        if collateral is None:
            raise RevocationUnavailableError(
                f"no TDX collateral for FMSPC {pck.fmspc.hex()}: TCB status and PCK revocation "
                "cannot be checked"
            )
        require_crls(collateral)
    if collateral is not None:
        evaluation, qe_status, tcb_info, qe_id = verify_collateral(
            q, chain, pck, collateral, root, when, accepted_tcb_statuses, checks
        )
    return TdxVerification(
        quote=q,
        chain=chain,
        pck=pck,
        tcb=evaluation,
        qe_tcb_status=qe_status,
        tcb_info=tcb_info,
        qe_identity=qe_id,
        checks=tuple(checks),
    )


def verify_tdx(
    quote: bytes | TdxQuote, *, collateral: TdxCollateral | None = None, now: _dt.datetime | None = None
) -> TdxQuote:
    """Verify and return the parsed quote (see `verify_tdx_quote`)."""
    return verify_tdx_quote(quote, collateral=collateral, now=now).quote
