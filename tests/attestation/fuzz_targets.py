"""atheris fuzz targets for the attestation parsers and verifiers.

    python tests/attestation/fuzz_targets.py TARGET [libFuzzer args, e.g. -max_total_time=15 CORPUS_DIR]

TARGET is one of: snp_report, cert_table, tdx_quote, collateral, reference_values. The invariant is
the one of h11's fuzz harness: any input either succeeds or raises our own `AttestationError`;
anything else escaping is a crash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys

import atheris

with atheris.instrument_imports():
    from attestation import AttestationError, ReferenceValues, verify_snp_attestation, verify_tdx_quote
    from attestation.snp import abi, certs
    from attestation.tdx import collateral

NOW = dt.datetime(2026, 2, 3, 1, tzinfo=dt.UTC)


def snp_report(data: bytes) -> None:
    try:
        report = abi.parse_report(data)
    except AttestationError:
        return
    assert report.to_bytes() == data
    with contextlib.suppress(AttestationError):
        verify_snp_attestation(report, [], now=NOW)


def cert_table(data: bytes) -> None:
    try:
        entries = certs.parse_cert_table(data)
        certs.SnpCerts.from_cert_table(data)
    except AttestationError:
        return
    assert certs.parse_cert_table(certs.serialize_cert_table(entries)) == entries


def tdx_quote(data: bytes) -> None:
    with contextlib.suppress(AttestationError):
        verify_tdx_quote(data, now=NOW)


def collateral_json(data: bytes) -> None:
    for parse in (collateral.parse_tcb_info, collateral.parse_qe_identity):
        with contextlib.suppress(AttestationError):
            parse(data)


def reference_values(data: bytes) -> None:
    with contextlib.suppress(AttestationError):
        ReferenceValues.from_json(data)


TARGETS = {
    "snp_report": snp_report,
    "cert_table": cert_table,
    "tdx_quote": tdx_quote,
    "collateral": collateral_json,
    "reference_values": reference_values,
}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
