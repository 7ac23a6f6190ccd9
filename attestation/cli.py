"""`python -m attestation`: verify SNP reports / TDX quotes, or fetch local evidence.

    verify snp REPORT [--cert FILE]... [--cert-table FILE] [REVOCATION] [--reference-values FILE]
                      [--report-data HEX] [--at RFC3339]
    verify tdx QUOTE [REVOCATION] [--reference-values FILE] [--report-data HEX] [--at RFC3339]
    report [--report-data HEX] [--simulated] [--cert-table-out FILE]

    REVOCATION: --crl FILE (SNP) | --collateral DIR | --fetch-cache DIR [--kds-url U] [--pcs-url U]
                | --no-revocation-check

`verify` prints one JSON object (claims + checks) on stdout and exits 0 if every check that ran
passed, 1 with the reason on stderr otherwise, 2 on bad usage. It always anchors in the bundled
AMD / Intel roots, and refuses unless it has revocation data (a CRL, TDX collateral) or is told
explicitly not to check revocation.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from common.cli import ArgumentParser
from common.files import atomic_write

from .api import check_snp, check_tdx
from .claims import snp_claims, tdx_claims
from .errors import AttestationError, CertificateExpiredError, NoProviderError
from .fetch import KDS_URL, PCS_URL, CollateralFetcher
from .providers.detect import detect_provider
from .reference_values import ReferenceValues
from .revocation import CollateralDirectory, NoRevocationSource, RevocationSource, pck_ca_type
from .snp.certs import common_name
from .snp.verify import verify_snp_attestation
from .tdx.pck import parse_pck_chain, parse_pck_extensions
from .tdx.quote import parse_quote
from .tdx.validity import common_window, dated_pieces
from .tdx.verify import verify_tdx_quote


class _UsageError(Exception):
    pass


class _Parser(ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _hex64(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {value!r}") from None
    if len(raw) > 64:
        raise argparse.ArgumentTypeError("report data is at most 64 bytes")
    return raw.ljust(64, b"\0")


def _time(value: str) -> _dt.datetime:
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {value!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError("the time needs a zone (e.g. Z)")
    return t


def _parser() -> _Parser:
    p = _Parser(prog="python -m attestation", description=(
        "Verify SNP reports and TDX quotes, or fetch local evidence."
    ))
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    verify = sub.add_parser("verify", help="verify evidence")
    vsub = verify.add_subparsers(dest="platform", required=True, parser_class=_Parser)
    snp = vsub.add_parser("snp", help="verify an SEV-SNP report")
    snp.add_argument("report", type=Path)
    snp.add_argument("--cert", type=Path, action="append", default=[], help="PEM bundle or DER certificate")
    snp.add_argument("--cert-table", type=Path, help="extended-report certificate table (auxblob)")
    snp.add_argument("--crl", type=Path, help="AMD CRL (DER or PEM) signed by the ARK")
    tdx = vsub.add_parser("tdx", help="verify a TDX quote")
    tdx.add_argument("quote", type=Path)
    for sp in (snp, tdx):
        sp.add_argument("--collateral", type=Path, metavar="DIR",
                        help="offline CRLs / TDX collateral (snp/<product>/vcek.crl, tdx/... or the TDX "
                             "files directly in DIR; see docs/attestation.md)")
        sp.add_argument("--fetch-cache", type=Path, metavar="DIR",
                        help="fetch CRLs / collateral from AMD KDS / Intel PCS, cached in DIR")
        sp.add_argument("--kds-url", default=KDS_URL, help="AMD KDS base URL for --fetch-cache")
        sp.add_argument("--pcs-url", default=PCS_URL, help="Intel PCS base URL for --fetch-cache")
        sp.add_argument("--no-revocation-check", action="store_true",
                        help="verify without CRLs / collateral (the result says revocation: not checked)")
        sp.add_argument("--reference-values", type=Path, help="ReferenceValues JSON (or a manifest)")
        sp.add_argument("--report-data", type=_hex64, help="expected report data (hex, zero-padded to 64)")
        sp.add_argument("--at", type=_time, help="reference time (RFC 3339), default now")
    rep = sub.add_parser("report", help="fetch local evidence and write it to stdout")
    rep.add_argument("--report-data", type=_hex64, default=bytes(64))
    rep.add_argument("--simulated", action="store_true", help="fall back to the simulated SNP provider")
    rep.add_argument("--cert-table-out", type=Path, help="also write the SNP certificate table to FILE")
    return p


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror}") from None


def _revocation(args: argparse.Namespace) -> RevocationSource | None:
    """The source the flags name; None only with --no-revocation-check (then nothing is required)."""
    given = [f for f in ("collateral", "fetch_cache") if getattr(args, f) is not None]
    if getattr(args, "crl", None) is not None:
        given.append("crl")
    if len(given) > 1 or (given and args.no_revocation_check):
        raise _UsageError("give one of --crl, --collateral, --fetch-cache, --no-revocation-check")
    if args.collateral is not None:
        if not args.collateral.is_dir():
            raise _UsageError(f"{args.collateral} is not a directory")
        return CollateralDirectory(args.collateral)
    if args.fetch_cache is not None:
        try:
            return CollateralFetcher(args.fetch_cache, kds_url=args.kds_url, pcs_url=args.pcs_url)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
    return None if args.no_revocation_check else NoRevocationSource()


def _revocation_note(out: dict[str, Any], args: argparse.Namespace) -> None:
    if args.no_revocation_check:
        out["revocation"] = "not checked"
        print("warning: revocation was not checked (--no-revocation-check)", file=sys.stderr)
    else:
        out["revocation"] = "checked"


def _claims_checked(
    out: dict[str, Any], checks: list[str], args: argparse.Namespace, rv: ReferenceValues | None,
    report_data: bytes, check: Callable[[ReferenceValues], object],
) -> dict[str, Any]:
    """After the signature checks: the reference values (which cover report_data), or else just the
    expected report_data; each check passed is named in ``checks``, a failure names what differed."""
    if rv is None and args.report_data is not None:
        if report_data != args.report_data:
            raise _FailedCheckError(
                out, checks, f"report_data is {report_data.hex()}, expected {args.report_data.hex()}")
        checks.append("report_data")
    if rv is not None:
        try:
            check(rv)
        except AttestationError as exc:
            raise _FailedCheckError(out, checks, str(exc)) from None
        checks.append("reference_values")
    out["checks"] = checks
    return out


def _verify_snp(args: argparse.Namespace) -> dict[str, Any]:
    certs = [_read(p) for p in args.cert]
    table = _read(args.cert_table) if args.cert_table else None
    revocation = _revocation(args)
    crl = _read(args.crl) if args.crl else None
    rv = ReferenceValues.from_json(_read(args.reference_values)) if args.reference_values else None
    res = verify_snp_attestation(
        _read(args.report), certs, cert_table=table, crl=crl, revocation=revocation,
        require_revocation=not args.no_revocation_check, now=args.at,
    )
    checks = list(res.checks)
    out: dict[str, Any] = {
        "platform": "snp",
        "product": res.product.value,
        "claims": snp_claims(res.report, res.product),
    }
    _revocation_note(out, args)
    return _claims_checked(out, checks, args, rv, res.report.report_data,
                           lambda ref: check_snp(res, ref, report_data=args.report_data))


def _verify_tdx(args: argparse.Namespace) -> dict[str, Any]:
    rv = ReferenceValues.from_json(_read(args.reference_values)) if args.reference_values else None
    quote = _read(args.quote)
    revocation = _revocation(args)
    try:
        res = verify_tdx_quote(
            quote, revocation=revocation, require_revocation=not args.no_revocation_check, now=args.at
        )
    except CertificateExpiredError as exc:
        raise _DatesError(f"{type(exc).__name__}: {exc}; {_tdx_window(quote, revocation, args.at)}") from None
    checks = list(res.checks)
    out: dict[str, Any] = {
        "platform": "tdx",
        "claims": tdx_claims(res.quote, res.pck, res.chain),
        "tcb_status": res.tcb_status,
    }
    _revocation_note(out, args)
    if res.tcb is not None:
        out["tcb_date"] = res.tcb.tcb_date.isoformat()
        out["qe_tcb_status"] = res.qe_tcb_status
    return _claims_checked(out, checks, args, rv, res.quote.body.report_data,
                           lambda ref: check_tdx(res, ref, report_data=args.report_data))


def _tdx_window(quote: bytes, revocation: RevocationSource | None, at: _dt.datetime | None) -> str:
    """When the quote and the collateral the flags name are valid together (for the error message)."""
    chain = parse_pck_chain(parse_quote(quote).pck_chain_pem)
    collateral = None
    if revocation is not None:
        try:
            pck = parse_pck_extensions(chain.leaf)
            ca = pck_ca_type(common_name(chain.intermediate.subject))
            collateral = revocation.tdx_collateral(pck.fmspc, ca, now=at or _dt.datetime.now(_dt.UTC))
        except AttestationError as exc:
            return f"and no collateral applies to this quote ({exc})"
    return common_window(dated_pieces(chain, collateral)).describe()


class _DatesError(Exception):
    """Verification failed on a date; the message says when verification could succeed."""


class _FailedCheckError(Exception):
    def __init__(self, out: dict[str, Any], checks: list[str], reason: str) -> None:
        self.out = out
        self.out["checks"] = checks
        self.reason = reason
        super().__init__(reason)


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data, mode=0o644)
    except OSError as exc:
        raise _UsageError(f"cannot write {path}: {exc.strerror}") from None


def _report(args: argparse.Namespace) -> int:
    """``attestation report``: errors name the command (it verifies nothing) and, without a TEE, the flag."""
    try:
        provider = detect_provider(allow_simulated=args.simulated)
        evidence = provider.get_evidence(args.report_data)
        if args.cert_table_out is not None:
            _write_atomic(args.cert_table_out, evidence.cert_table)
    except NoProviderError as exc:
        hint = "pass --simulated to use the simulated SNP provider"
        print(f"attestation report: {exc}; {hint}", file=sys.stderr)
        return 1
    except (AttestationError, OSError) as exc:
        print(f"attestation report: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(evidence.report)
    sys.stdout.buffer.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "report":
            return _report(args)
        out = _verify_snp(args) if args.platform == "snp" else _verify_tdx(args)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except _DatesError as exc:
        print(f"verification failed: {exc}", file=sys.stderr)
        return 1
    except _FailedCheckError as exc:
        print(json.dumps(exc.out, indent=1, sort_keys=False))
        print(f"verification failed: {exc.reason}", file=sys.stderr)
        return 1
    except AttestationError as exc:
        print(f"verification failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=1))
    return 0
