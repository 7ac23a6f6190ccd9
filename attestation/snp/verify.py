"""SEV-SNP verification: certificate chain, CRL, report signature, certificate-to-report binding.

What this layer establishes: the report was signed by a VCEK/VLEK that chains to a trusted AMD
ARK (bundled and pinned unless the caller passes other roots), every certificate is valid at
`now`, nothing is revoked by the given CRL, and the signing certificate belongs to this report
(REPORTED_TCB equals its SPL extensions, CHIP_ID equals its hwID). Claims against reference
values are `validate`'s job.

The chain is checked link by link with `verify_directly_issued_by`, as `cryptography`'s policy
verifier rejects AMD VCEKs (they carry no authority key identifier).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable
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
    ParseError,
    RevokedError,
    SignatureError,
    VerificationError,
)
from ..revocation import RevocationSource, RevocationUnavailableError
from ..trust import AmdRoots, AmdRootSet, bundled_amd_roots
from .abi import SigningKey, SnpReport, parse_report
from .certs import (
    Role,
    SnpCerts,
    VekExtensions,
    common_name,
    load_certificate,
    parse_vek_extensions,
    serial_of,
)
from .product import Product, decompose_tcb, product_from_cpuid

CertsInput = SnpCerts | Iterable[bytes | x509.Certificate] | None


@dataclass(frozen=True)
class SnpVerification:
    """Result of a successful verification: the report and what it was checked with."""

    report: SnpReport
    product: Product
    signing_key: SigningKey
    extensions: VekExtensions
    vek: x509.Certificate
    intermediate: x509.Certificate
    ark: x509.Certificate
    checks: tuple[str, ...]


def _collect(certs: CertsInput, cert_table: bytes | None) -> SnpCerts:
    if isinstance(certs, SnpCerts):
        collected = certs
    else:
        loaded: list[x509.Certificate] = []
        blobs: list[bytes] = []
        for c in certs or ():
            if isinstance(c, x509.Certificate):
                loaded.append(c)
            else:
                blobs.append(bytes(c))
        collected = SnpCerts.from_certificates(loaded).merge(SnpCerts.from_blobs(blobs))
    if cert_table:
        collected = collected.merge(SnpCerts.from_cert_table(cert_table))
    return collected


def _now(now: _dt.datetime | None) -> _dt.datetime:
    if now is None:
        return _dt.datetime.now(_dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def check_validity(cert: x509.Certificate, now: _dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateExpiredError(
            f"{what} certificate is not yet valid: {now.isoformat()} is before "
            f"{cert.not_valid_before_utc.isoformat()}",
            step="validity",
        )
    if now > cert.not_valid_after_utc:
        raise CertificateExpiredError(
            f"{what} certificate has expired: {now.isoformat()} is after "
            f"{cert.not_valid_after_utc.isoformat()}",
            step="validity",
        )


def _issued_by(child: x509.Certificate, parent: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            f"{what}: {common_name(child.subject)!r} is not signed by {common_name(parent.subject)!r}"
            f" ({type(exc).__name__}: {exc})",
            step="chain",
        ) from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def _check_vek_profile(vek: x509.Certificate, role: Role) -> Product:
    want_cn = "SEV-VCEK" if role is Role.VCEK else "SEV-VLEK"
    if common_name(vek.subject) != want_cn:
        raise CertificateError(
            f"{role.value} subject CN is {common_name(vek.subject)!r}, expected {want_cn!r}",
            step="vek_profile",
        )
    if vek.version is not x509.Version.v3:
        raise CertificateError(f"{role.value} is not an X.509 v3 certificate", step="vek_profile")
    if vek.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        raise CertificateError(
            f"{role.value} signature algorithm is {vek.signature_algorithm_oid.dotted_string}, "
            "expected RSASSA-PSS",
            step="vek_profile",
        )
    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise CertificateError(f"{role.value} key is not ECDSA P-384", step="vek_profile")
    issuer = common_name(vek.issuer)
    prefix = "SEV-" if role is Role.VCEK else "SEV-VLEK-"
    if not issuer.startswith(prefix):
        raise CertificateError(
            f"{role.value} issuer CN is {issuer!r}, expected {prefix}<product>", step="vek_profile"
        )
    rest = issuer[len(prefix) :]
    if role is Role.VCEK and rest.startswith("VLEK-"):
        raise CertificateError(f"VCEK issued by an ASVK ({issuer!r})", step="vek_profile")
    try:
        return Product.from_name(rest)
    except ParseError:
        raise CertificateError(
            f"{role.value} issuer {issuer!r} names an unknown product", step="vek_profile"
        ) from None


def report_signature_der(report: SnpReport) -> bytes:
    return encode_dss_signature(report.signature_r, report.signature_s)


def verify_report_signature(report: SnpReport, vek: x509.Certificate) -> None:
    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError("signing certificate key is not ECDSA", step="report_signature")
    try:
        key.verify(report_signature_der(report), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureError(
            "report signature verification failed: the report is not signed by the "
            f"{report.signing_key.name} key",
            step="report_signature",
        ) from None


def load_crl(data: bytes, what: str = "CRL") -> x509.CertificateRevocationList:
    """Load a DER or PEM CRL (parsed once per distinct input)."""
    return _load_crl(bytes(data), what)


@functools.lru_cache(maxsize=64)
def _load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    """Load a DER or PEM CRL with every field we use decoded up front (cryptography is lazy)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_algorithm_oid)
        for entry in crl:
            _ = (entry.serial_number, entry.revocation_date_utc)
    except (ValueError, TypeError) as exc:
        raise ParseError(f"malformed {what}: {exc}", field="crl") from None
    return crl


def check_crl(
    crl_data: bytes, ark: x509.Certificate, revocable: list[tuple[str, x509.Certificate]], now: _dt.datetime
) -> None:
    crl = load_crl(crl_data)
    if crl.issuer != ark.subject:
        raise VerificationError(
            f"CRL issuer {crl.issuer.rfc4514_string()!r} is not the ARK {ark.subject.rfc4514_string()!r}",
            step="crl",
        )
    if not crl.is_signature_valid(ark.public_key()):  # type: ignore[arg-type]
        raise SignatureError("CRL is not signed by ARK", step="crl")
    if now < crl.last_update_utc:
        raise CertificateExpiredError(f"CRL is not yet valid at {now.isoformat()}", step="crl")
    if crl.next_update_utc is not None and now > crl.next_update_utc:
        raise CertificateExpiredError(f"CRL expired at {crl.next_update_utc.isoformat()}", step="crl")
    for what, cert in revocable:
        entry = crl.get_revoked_certificate_by_serial_number(serial_of(cert))
        if entry is not None:
            raise RevokedError(f"{what} was revoked at {entry.revocation_date_utc.isoformat()}", step="crl")


def _pick_root(
    candidates: list[AmdRootSet], supplied_ark: x509.Certificate | None, product: Product
) -> list[AmdRootSet]:
    if not candidates:
        raise CertificateError(f"no trusted ARK for product {product.value}", step="chain")
    if supplied_ark is None:
        return candidates
    matching = [c for c in candidates if c.ark == supplied_ark]
    if not matching:
        raise CertificateError(
            f"the ARK given with the evidence ({common_name(supplied_ark.subject)!r}) is not "
            f"a trusted {product.value} ARK",
            step="chain",
        )
    return matching


def _roles(rep: SnpReport) -> tuple[Role, Role]:
    """(VCEK or VLEK, ASK or ASVK) for the key that signed the report."""
    if rep.signing_key is SigningKey.NONE:
        raise SignatureError("report is unsigned (SIGNING_KEY = NONE)", step="report_signature")
    if rep.signing_key is SigningKey.VCEK:
        return Role.VCEK, Role.ASK
    return Role.VLEK, Role.ASVK


def _check_vek(rep: SnpReport, vek: x509.Certificate, role: Role) -> tuple[Product, VekExtensions]:
    """The VCEK/VLEK profile, its AMD extensions, and its product against the report's CPUID."""
    product = _check_vek_profile(vek, role)
    ext = parse_vek_extensions(vek)
    if role is Role.VCEK and (ext.hwid is None or ext.csp_id is not None):
        raise CertificateError("VCEK must carry a hwID and no cspID", step="vek_profile")
    if role is Role.VLEK and (ext.csp_id is None or ext.hwid is not None):
        raise CertificateError("VLEK must carry a cspID and no hwID", step="vek_profile")
    if ext.product is not product:
        raise CertificateError(
            f"{role.value} productName {ext.product_name!r} does not match its issuer ({product.value})",
            step="vek_profile",
        )
    if rep.cpuid_fam_id is not None and rep.cpuid_mod_id is not None:
        cpu = product_from_cpuid(rep.cpuid_fam_id, rep.cpuid_mod_id)
        if cpu is not None and cpu is not product:
            raise CertificateError(
                f"report CPUID identifies {cpu.value}, the {role.value} is for {product.value}",
                step="vek_profile",
            )
    return product, ext


def _supplied_intermediate(
    have: SnpCerts, vek: x509.Certificate, role: Role, inter_role: Role, product: Product
) -> x509.Certificate | None:
    """The ASK/ASVK the evidence brought, if any; the wrong kind is an error, never substituted."""
    supplied = have.ask if inter_role is Role.ASK else have.asvk
    other = have.asvk if inter_role is Role.ASK else have.ask
    prefix = "SEV-" if inter_role is Role.ASK else "SEV-VLEK-"
    if supplied is None and other is not None:
        raise CertificateError(
            f"{role.value} needs the {inter_role.value} ({prefix}{product.value}); the chain carries "
            f"{common_name(other.subject)!r}",
            step="chain",
        )
    if supplied is not None and common_name(supplied.subject) != prefix + product.value:
        raise CertificateError(
            f"{inter_role.value} {common_name(supplied.subject)!r} does not match "
            f"the {role.value} issuer {common_name(vek.issuer)!r}",
            step="chain",
        )
    return supplied


def _chain_to_root(
    vek: x509.Certificate,
    supplied_inter: x509.Certificate | None,
    roots: list[AmdRootSet],
    role: Role,
    inter_role: Role,
) -> tuple[x509.Certificate, x509.Certificate]:
    """(intermediate, ARK): the first trusted root set under which VEK <- intermediate <- ARK holds."""
    last_error: CertificateError | None = None
    chosen: tuple[x509.Certificate, x509.Certificate] | None = None
    for rs in roots:
        inter = supplied_inter or (rs.ask if inter_role is Role.ASK else rs.asvk)
        if inter is None:
            last_error = CertificateError(f"{inter_role.value} certificate is missing", step="chain")
            continue
        try:
            _issued_by(inter, rs.ark, f"{inter_role.value} not signed by ARK")
            _issued_by(vek, inter, f"{role.value} not signed by {inter_role.value}")
        except CertificateError as exc:
            last_error = exc
            continue
        chosen = (inter, rs.ark)
        break
    if chosen is None:
        assert last_error is not None
        raise last_error
    inter, ark = chosen
    if not _is_ca(inter) or not _is_ca(ark):
        raise CertificateError(f"{inter_role.value} or ARK lacks BasicConstraints CA", step="chain")
    if common_name(vek.issuer) != common_name(inter.subject) or inter.issuer != ark.subject:
        raise CertificateError("issuer names do not match the chain", step="chain")
    return inter, ark


def _check_revocation(
    crl: bytes | None,
    revocation: RevocationSource | None,
    require: bool,
    chain: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
    product: Product,
    role: Role,
    inter_role: Role,
    now: _dt.datetime,
) -> bool:
    """Check the CRL (given, or asked from `revocation`) against the intermediate and the VEK.
    Returns whether a CRL was checked; with `require`, no CRL is a refusal."""
    vek, inter, ark = chain
    if crl is None and revocation is not None:
        crl = revocation.snp_crl(product, vlek=role is Role.VLEK, ark=ark, now=now)
    if crl is None:
        if require:
            raise RevocationUnavailableError(
                f"no CRL for the {product.value} {role.value} chain: revocation of the "
                f"{inter_role.value} and {role.value} cannot be checked"
            )
        return False
    revocable = [(inter_role.value, inter)]
    if serial_of(vek):  # KDS issues VCEKs with serial 0: only a non-zero serial can be listed
        revocable.append((role.value, vek))
    check_crl(crl, ark, revocable, now)
    return True


def verify_snp_attestation(
    report: bytes | SnpReport,
    certs: CertsInput = None,
    *,
    cert_table: bytes | None = None,
    trusted_roots: AmdRoots | None = None,
    crl: bytes | None = None,
    revocation: RevocationSource | None = None,
    require_revocation: bool = False,
    now: _dt.datetime | None = None,
) -> SnpVerification:
    """Verify an SNP report and its certificates; return what was verified. Raises on any failure.

    Revocation: `crl` (ARK-signed) or, when None, the CRL `revocation` returns for the product is
    checked; `require_revocation=True` refuses when there is neither (every verifier that decides
    admission passes it; without it, revocation is simply not part of the result's `checks`).
    """
    checks: list[str] = []
    rep = report if isinstance(report, SnpReport) else parse_report(report)
    checks.append("report_format")
    when = _now(now)
    role, inter_role = _roles(rep)
    have = _collect(certs, cert_table)
    vek = have.vcek if role is Role.VCEK else have.vlek
    if vek is None:
        raise CertificateError(f"{role.value} certificate is missing", step="chain")
    product, ext = _check_vek(rep, vek, role)
    checks.append("vek_profile")
    supplied_inter = _supplied_intermediate(have, vek, role, inter_role, product)
    roots = _pick_root((trusted_roots or bundled_amd_roots()).for_product(product), have.ark, product)
    inter, ark = _chain_to_root(vek, supplied_inter, roots, role, inter_role)
    checks.append("chain")
    check_validity(vek, when, role.value)
    check_validity(inter, when, inter_role.value)
    check_validity(ark, when, "ARK")
    checks.append("validity")
    if _check_revocation(
        crl, revocation, require_revocation, (vek, inter, ark), product, role, inter_role, when
    ):
        checks.append("crl")
    verify_report_signature(rep, vek)
    checks.append("report_signature")
    _check_binding(rep, ext, product, role)
    checks.append("reported_tcb_matches_cert")
    if role is Role.VCEK and any(rep.chip_id):
        checks.append("chip_id_matches_hwid")
    return SnpVerification(
        report=rep,
        product=product,
        signing_key=rep.signing_key,
        extensions=ext,
        vek=vek,
        intermediate=inter,
        ark=ark,
        checks=tuple(checks),
    )


def _check_binding(rep: SnpReport, ext: VekExtensions, product: Product, role: Role) -> None:
    reported = decompose_tcb(rep.reported_tcb, product)
    cert_tcb = ext.tcb()
    if product is not Product.TURIN:
        cert_tcb = cert_tcb.__class__(
            bl=cert_tcb.bl, tee=cert_tcb.tee, snp=cert_tcb.snp, ucode=cert_tcb.ucode
        )
    elif cert_tcb.fmc is None:
        raise CertificateError("Turin VCEK has no fmcSPL extension", step="vek_tcb")
    if reported != cert_tcb:
        raise VerificationError(
            f"REPORTED_TCB is {reported}, the {role.value} certifies {cert_tcb}", step="vek_tcb"
        )
    current = decompose_tcb(rep.current_tcb, product)
    low = current.at_least(cert_tcb)
    if low:
        raise VerificationError(
            f"{role.value} TCB {cert_tcb} is above CURRENT_TCB {current} in {low}", step="vek_tcb"
        )
    if role is Role.VCEK and any(rep.chip_id):
        hwid = ext.hwid or b""
        if rep.chip_id[: len(hwid)] != hwid or any(rep.chip_id[len(hwid) :]):
            raise VerificationError(
                f"CHIP_ID is {rep.chip_id.hex()}, the VCEK hwID is {hwid.hex()}", step="chip_id"
            )


def verify_snp(
    report: bytes | SnpReport,
    certs: CertsInput = None,
    *,
    cert_table: bytes | None = None,
    trusted_roots: AmdRoots | None = None,
    crl: bytes | None = None,
    revocation: RevocationSource | None = None,
    require_revocation: bool = False,
    now: _dt.datetime | None = None,
) -> SnpReport:
    """Verify and return the parsed report (see `verify_snp_attestation`)."""
    return verify_snp_attestation(
        report, certs, cert_table=cert_table, trusted_roots=trusted_roots, crl=crl,
        revocation=revocation, require_revocation=require_revocation, now=now,
    ).report


def load_vek(data: bytes) -> x509.Certificate:
    return load_certificate(data)
