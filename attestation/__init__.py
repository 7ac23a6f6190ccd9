"""Shared attestation core: SNP and TDX evidence parsing, verification, reference values and providers.

Stable API (see docs/attestation.md):

    provider = detect_provider(allow_simulated=False)        # EvidenceProvider
    evidence = provider.get_evidence(report_data)            # Evidence(platform, report, cert_table, certs)

    result = verify_snp_attestation(evidence.report, evidence.certs, cert_table=evidence.cert_table,
                                    trusted_roots=None, crl=None, now=None)   # SnpVerification
    report = verify_snp(...)                                 # same checks, returns SnpReport
    tdx = verify_tdx_quote(quote, collateral=None, now=None)  # TdxVerification
    quote = verify_tdx(...)                                  # returns TdxQuote

    rv = ReferenceValues.from_json(text)
    check_snp(result, rv, report_data=..., host_data=...)    # raises ValidationError
    check_tdx(tdx, rv, report_data=..., mr_config_id=...)

Every failure raises a subclass of `AttestationError`.
"""

# Exports load on first use (PEP 562): a guest that only reads initdata or HOST_DATA must not pay
# cryptography's import time and memory for the verifiers it never calls.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import check_snp, check_tdx, local_host_data
    from .errors import (
        AttestationError,
        CertificateError,
        CertificateExpiredError,
        CollateralError,
        Mismatch,
        NoProviderError,
        ParseError,
        ProviderError,
        ReferenceValuesError,
        RevokedError,
        SignatureError,
        TcbStatusError,
        ValidationError,
        VerificationError,
    )
    from .evidence import Evidence, EvidenceProvider, Platform
    from .fetch import KDS_URL, PCS_URL, CollateralFetcher, base_url
    from .providers.configfs_tsm import ConfigfsTsmProvider
    from .providers.detect import detect_platform, detect_provider
    from .providers.sevguest import SevGuestProvider
    from .reference_values import ReferenceValues, SnpReferenceValues, TdxReferenceValues
    from .revocation import (
        CollateralDirectory,
        NoRevocationSource,
        RevocationSource,
        RevocationUnavailableError,
    )
    from .snp.abi import SnpReport, parse_report
    from .snp.product import Product
    from .snp.verify import SnpVerification, verify_snp, verify_snp_attestation
    from .tdx.collateral import TdxCollateral
    from .tdx.quote import TdxQuote, parse_quote
    from .tdx.verify import TdxVerification, verify_tdx, verify_tdx_quote
    from .trust import AmdRoots, bundled_amd_roots, bundled_intel_root

_EXPORTS: dict[str, str] = {
    "KDS_URL": ".fetch",
    "PCS_URL": ".fetch",
    "CollateralFetcher": ".fetch",
    "base_url": ".fetch",
    "CollateralDirectory": ".revocation",
    "NoRevocationSource": ".revocation",
    "RevocationSource": ".revocation",
    "RevocationUnavailableError": ".revocation",
    "AmdRoots": ".trust",
    "AttestationError": ".errors",
    "CertificateError": ".errors",
    "CertificateExpiredError": ".errors",
    "CollateralError": ".errors",
    "ConfigfsTsmProvider": ".providers.configfs_tsm",
    "Evidence": ".evidence",
    "EvidenceProvider": ".evidence",
    "Mismatch": ".errors",
    "NoProviderError": ".errors",
    "ParseError": ".errors",
    "Platform": ".evidence",
    "Product": ".snp.product",
    "ProviderError": ".errors",
    "ReferenceValues": ".reference_values",
    "ReferenceValuesError": ".errors",
    "RevokedError": ".errors",
    "SevGuestProvider": ".providers.sevguest",
    "SignatureError": ".errors",
    "SnpReferenceValues": ".reference_values",
    "SnpReport": ".snp.abi",
    "SnpVerification": ".snp.verify",
    "TcbStatusError": ".errors",
    "TdxCollateral": ".tdx.collateral",
    "TdxQuote": ".tdx.quote",
    "TdxReferenceValues": ".reference_values",
    "TdxVerification": ".tdx.verify",
    "ValidationError": ".errors",
    "VerificationError": ".errors",
    "bundled_amd_roots": ".trust",
    "bundled_intel_root": ".trust",
    "check_snp": ".api",
    "check_tdx": ".api",
    "detect_platform": ".providers.detect",
    "detect_provider": ".providers.detect",
    "local_host_data": ".api",
    "parse_quote": ".tdx.quote",
    "parse_report": ".snp.abi",
    "verify_snp": ".snp.verify",
    "verify_snp_attestation": ".snp.verify",
    "verify_tdx": ".tdx.verify",
    "verify_tdx_quote": ".tdx.verify",
}


__all__ = [
    "KDS_URL",
    "PCS_URL",
    "AmdRoots",
    "AttestationError",
    "CertificateError",
    "CertificateExpiredError",
    "CollateralDirectory",
    "CollateralError",
    "CollateralFetcher",
    "ConfigfsTsmProvider",
    "Evidence",
    "EvidenceProvider",
    "Mismatch",
    "NoProviderError",
    "NoRevocationSource",
    "ParseError",
    "Platform",
    "Product",
    "ProviderError",
    "ReferenceValues",
    "ReferenceValuesError",
    "RevocationSource",
    "RevocationUnavailableError",
    "RevokedError",
    "SevGuestProvider",
    "SignatureError",
    "SnpReferenceValues",
    "SnpReport",
    "SnpVerification",
    "TcbStatusError",
    "TdxCollateral",
    "TdxQuote",
    "TdxReferenceValues",
    "TdxVerification",
    "ValidationError",
    "VerificationError",
    "base_url",
    "bundled_amd_roots",
    "bundled_intel_root",
    "check_snp",
    "check_tdx",
    "detect_platform",
    "detect_provider",
    "local_host_data",
    "parse_quote",
    "parse_report",
    "verify_snp",
    "verify_snp_attestation",
    "verify_tdx",
    "verify_tdx_quote",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
