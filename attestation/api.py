"""The high-level entry points other components use (re-exported by `attestation`).

verify_*  : signatures, certificate chains, CRLs, collateral (raise `VerificationError`s);
check_*   : claims of an already verified report/quote against reference values (raise
            `ValidationError` naming every differing field, for every entry tried).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import Mismatch, ValidationError
from .evidence import Evidence
from .reference_values import ReferenceValues, SnpReferenceValues, TdxReferenceValues
from .snp.abi import SnpReport, parse_report
from .snp.product import Product
from .snp.validate import check_snp_entries
from .snp.verify import SnpVerification
from .tdx.quote import TdxQuote, parse_quote
from .tdx.validate import check_tdx_entries
from .tdx.verify import TdxVerification


def check_snp(
    report: SnpReport | SnpVerification,
    reference_values: ReferenceValues | Sequence[SnpReferenceValues],
    *,
    report_data: bytes | None = None,
    host_data: bytes | None = None,
) -> SnpReferenceValues:
    """Pass (returning the matching entry) if any SNP entry matches; else raise `ValidationError`.

    Pass the `SnpVerification` from `verify_snp_attestation` when available: its product line
    (from the certificate chain) selects the TCB layout and must equal the entry's ProductName.
    `report_data` / `host_data`, when given, must equal the report's exactly.
    """
    product: Product | None = None
    if isinstance(report, SnpVerification):
        product = report.product
        report = report.report
    entries = (
        reference_values.snp if isinstance(reference_values, ReferenceValues) else tuple(reference_values)
    )
    if report_data is not None and len(report_data) != 64:
        raise ValidationError([Mismatch("report_data", "64 bytes", f"{len(report_data)} bytes")])
    return check_snp_entries(report, entries, product=product, report_data=report_data, host_data=host_data)


def check_tdx(
    quote: TdxQuote | TdxVerification,
    reference_values: ReferenceValues | Sequence[TdxReferenceValues],
    *,
    report_data: bytes | None = None,
    mr_config_id: bytes | None = None,
) -> TdxReferenceValues:
    """Pass if any TDX entry matches; else raise `ValidationError`.

    With a `TdxVerification`, PCK-derived options (PIIDs, SGX type, platform configuration) and
    the collateral's TCB evaluation data number are checked too.
    """
    entries = (
        reference_values.tdx if isinstance(reference_values, ReferenceValues) else tuple(reference_values)
    )
    if report_data is not None and len(report_data) != 64:
        raise ValidationError([Mismatch("report_data", "64 bytes", f"{len(report_data)} bytes")])
    return check_tdx_entries(quote, entries, report_data=report_data, mr_config_id=mr_config_id)


def local_host_data(evidence: Evidence) -> bytes:
    """The launch-time host data of local evidence: SNP HOST_DATA (32 bytes) or TDX MRCONFIGID (48).

    The bytes are parsed strictly but NOT verified: this is for a guest reading its own evidence
    over the trusted guest<->firmware channel (as Contrast's initdata-processor does), never for
    evidence received from elsewhere.
    """
    if evidence.platform == "snp":
        return parse_report(evidence.report).host_data
    return parse_quote(evidence.report).body.mr_config_id
