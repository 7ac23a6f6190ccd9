"""TDX: quotes v4/v5 verify and reproduce their facts; negatives fail for their reasons; collateral."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import struct
from typing import Any

import pytest
from attvectors import VECTORS, at, read, vector, vectors

from attestation import (
    AttestationError,
    CertificateError,
    CertificateExpiredError,
    CollateralError,
    ParseError,
    SignatureError,
    TcbStatusError,
    TdxCollateral,
    verify_tdx_quote,
)
from attestation.claims import tdx_claims
from attestation.tdx import collateral as coll
from attestation.tdx.pck import parse_pck_chain, parse_pck_extensions
from attestation.tdx.quote import parse_quote
from attestation.tdx.verify import verify_tdx

POSITIVE = vectors("tdx-quote")
T2023 = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)
COL2023 = VECTORS / "tdx" / "collateral" / "gtg-2023"


@pytest.mark.parametrize("v", POSITIVE, ids=[v["id"] for v in POSITIVE])
def test_positive_quote_verifies_and_reproduces_facts(v: dict[str, Any]) -> None:
    quote = read(v["files"]["quote"]["file"])
    res = verify_tdx_quote(quote, now=at(v["verify_at"]["recommended"]))
    assert res.tcb_status == "not evaluated"
    assert {"pck_chain", "quote_signature", "qe_report_signature", "qe_binding"} <= set(res.checks)
    claims = tdx_claims(res.quote, res.pck, res.chain)
    for key, want in v["facts"].items():
        got = claims[key]
        if isinstance(want, dict):
            for k, w in want.items():
                assert got[k] == w, f"{key}.{k}"
        else:
            assert got == want, key
    if "nonce" in v["files"]:
        assert res.quote.body.report_data == read(v["files"]["nonce"]["file"])
    assert verify_tdx(quote, now=at(v["verify_at"]["recommended"])).raw == quote


def test_quote_with_collateral_uptodate() -> None:
    v = vector("tdx/trustee-spr-v4")
    res = verify_tdx_quote(
        read(v["files"]["quote"]["file"]), collateral=TdxCollateral.from_directory(COL2023), now=T2023
    )
    ev = v["expected"]["collateral_evaluation"]
    assert res.tcb is not None
    assert res.tcb.status == ev["tcb_level_status"]
    assert res.tcb.tcb_date == at(ev["tcb_level_date"])
    assert res.qe_tcb_status == ev["qe_tcb_status"]
    assert {"collateral_signatures", "root_crl", "pck_crl", "collateral_match", "tcb_status"} <= set(
        res.checks
    )


def test_quote_with_collateral_no_matching_level() -> None:
    v = vector("tdx/gtg-spr-e4-v4")
    with pytest.raises(CollateralError, match="no matching TCB level found"):
        verify_tdx_quote(
            read(v["files"]["quote"]["file"]), collateral=TdxCollateral.from_directory(COL2023), now=T2023
        )


def test_collateral_expired_after_next_update() -> None:
    v = vector("tdx/trustee-spr-v4")
    with pytest.raises(CertificateExpiredError, match="tcbInfo has expired"):
        verify_tdx_quote(
            read(v["files"]["quote"]["file"]),
            collateral=TdxCollateral.from_directory(COL2023),
            now=dt.datetime(2023, 7, 20, tzinfo=dt.UTC),
        )


def test_v5_tcb_evaluation_with_module_identity() -> None:
    v = vector("tdx/gtg-v5-tdx15")
    q = parse_quote(read(v["files"]["quote"]["file"]))
    pck = parse_pck_extensions(parse_pck_chain(q.pck_chain_pem).leaf)
    info = coll.parse_tcb_info(read(v["collateral"]["tcb_info"]))
    ev = coll.evaluate_tcb(q.body.tee_tcb_svn, pck.tcb_components, pck.pce_svn, info)
    want = v["expected"]["collateral_evaluation"]
    assert (ev.status, ev.module_identity, ev.module_status) == (
        want["tcb_level_status"],
        want["module_identity_id"],
        want["module_identity_status"],
    )
    assert ev.tcb_date == at(want["tcb_level_date"])


def test_2026_tcbinfo_fails_with_expired_signing_chain() -> None:
    # The index notes the 2026 tcbInfo's real issuer is a renewed TCB Signing cert not in the set.
    v = vector("tdx/gtg-v5-tdx15")
    col = TdxCollateral(
        tcb_info=read(v["collateral"]["tcb_info"]),
        tcb_info_issuer_chain=(COL2023 / "tcb_info_issuer_chain.pem").read_bytes(),
        qe_identity=(COL2023 / "qe_identity.json").read_bytes(),
        qe_identity_issuer_chain=(COL2023 / "qe_identity_issuer_chain.pem").read_bytes(),
    )
    with pytest.raises(CertificateExpiredError):
        verify_tdx_quote(
            read(v["files"]["quote"]["file"]), collateral=col, now=dt.datetime(2026, 2, 3, 1, tzinfo=dt.UTC)
        )


def test_collateral_signatures_cover_raw_bytes() -> None:
    raw = (COL2023 / "tcb_info_fmspc_50806f000000.json").read_bytes()
    info = coll.parse_tcb_info(raw)
    assert info.signed_body.startswith(b'{"id":"TDX"') and info.signed_body in raw
    # Same JSON, different whitespace: a re-serialising verifier would still accept it; we must not.
    doc = json.loads(raw)
    respaced = json.dumps(doc, indent=2).encode()
    col = TdxCollateral(
        tcb_info=respaced,
        tcb_info_issuer_chain=(COL2023 / "tcb_info_issuer_chain.pem").read_bytes(),
        qe_identity=(COL2023 / "qe_identity.json").read_bytes(),
        qe_identity_issuer_chain=(COL2023 / "qe_identity_issuer_chain.pem").read_bytes(),
    )
    with pytest.raises(SignatureError, match="tcbInfo signature"):
        verify_tdx_quote(read("tdx/trustee-spr-v4/quote.dat"), collateral=col, now=T2023)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda d: d.replace(b'"fmspc":"50806f000000"', b'"fmspc":"11111f000000"'),
            SignatureError,
            "tcbInfo",
        ),
        (lambda d: d + b"x", ParseError, "trailing"),
        (lambda d: d.replace(b'"signature"', b'"signature2"'), ParseError, "exactly"),
    ],
)
def test_tampered_tcb_info(mutate: Any, error: type[Exception], message: str) -> None:
    raw = (COL2023 / "tcb_info_fmspc_50806f000000.json").read_bytes()
    col = TdxCollateral(
        tcb_info=mutate(raw),
        tcb_info_issuer_chain=(COL2023 / "tcb_info_issuer_chain.pem").read_bytes(),
        qe_identity=(COL2023 / "qe_identity.json").read_bytes(),
        qe_identity_issuer_chain=(COL2023 / "qe_identity_issuer_chain.pem").read_bytes(),
    )
    with pytest.raises(error, match=message):
        verify_tdx_quote(read("tdx/trustee-spr-v4/quote.dat"), collateral=col, now=T2023)


def test_tcb_status_acceptance_is_configurable() -> None:
    info = coll.parse_tcb_info((COL2023 / "tcb_info_fmspc_50806f000000.json").read_bytes())
    statuses = [lvl.tcb_status for lvl in info.tcb_levels]
    assert statuses[0] == "UpToDate"
    with pytest.raises(TcbStatusError) as exc:
        verify_tdx_quote(
            read("tdx/trustee-spr-v4/quote.dat"),
            collateral=TdxCollateral.from_directory(COL2023),
            now=T2023,
            accepted_tcb_statuses=("SWHardeningNeeded",),
        )
    assert exc.value.status == "UpToDate"


def test_qe_tcb_level_not_found() -> None:
    qe = coll.parse_qe_identity((COL2023 / "qe_identity.json").read_bytes())
    assert coll.evaluate_qe_tcb(10, qe).tcb_status == "UpToDate"
    with pytest.raises(CollateralError, match="no matching QE TCB level"):
        coll.evaluate_qe_tcb(3, qe)


# --- negatives from the index -------------------------------------------------------------------

NEGATIVE_EXPECT: dict[str, tuple[type[Exception], str]] = {
    "negative/tdx-header-byte": (SignatureError, "quote's signature"),
    "negative/tdx-body-mrseam-bitflip": (SignatureError, "quote's signature"),
    "negative/tdx-quote-sig-bitflip": (SignatureError, "quote's signature"),
    "negative/tdx-qe-report-bitflip": (SignatureError, "QE report signature"),
    "negative/tdx-pck-leaf-byte": (CertificateError, "PCK leaf certificate"),
    "negative/tdx-version-3": (ParseError, "quote format not supported"),
    "negative/tdx-truncated": (ParseError, "minimum v4 quote size"),
    "negative/tdx-expired-pck": (CertificateExpiredError, "2029-09-20"),
}
NEGATIVES = vectors("negative-tdx")


def test_every_negative_tdx_vector_has_an_expectation() -> None:
    assert {v["id"] for v in NEGATIVES} == set(NEGATIVE_EXPECT)


@pytest.mark.parametrize("v", NEGATIVES, ids=[v["id"] for v in NEGATIVES])
def test_negative_quote_fails_with_listed_reason(v: dict[str, Any]) -> None:
    quote = read(v["files"]["quote"]["file"]) if "files" in v else read(v["quote"])
    now = at(v["verify_at"]) if "verify_at" in v else T2023
    error, message = NEGATIVE_EXPECT[v["id"]]
    with pytest.raises(error, match=message):
        verify_tdx_quote(quote, now=now)


# --- go-tdx-guest TestNegativeVerification byte table and more ------------------------------------


@pytest.mark.parametrize(
    ("index", "value", "error", "message"),
    [
        (0x000, 3, ParseError, "quote format not supported"),
        (0x278, 0x10, ParseError, "Expected size"),
        (0x1343, 0x32, ParseError, "exactly 3 PEM certificates"),
        (0x1329, 0x32, CertificateError, "trusted Intel SGX Root CA"),
        (0xF5F, 0x32, CertificateError, "Intermediate CA certificate"),
        (0xB77, 0x32, CertificateError, "PCK leaf certificate"),
        (0x1E, 0x32, SignatureError, "quote's signature"),
        (0x3C, 0x32, SignatureError, "quote's signature"),
        (0x02, 3, ParseError, "attestation key type"),
        (0x04, 0, ParseError, "TEE type"),
        (0x2FC, 5, ParseError, "certification data type"),
    ],
)
def test_single_byte_changes(index: int, value: int, error: type[Exception], message: str) -> None:
    raw = bytearray(read("tdx/gtg-spr-e4-v4/quote.dat"))
    raw[index] = value
    with pytest.raises(error, match=message):
        verify_tdx_quote(bytes(raw), now=T2023)


def test_v5_body_descriptor_checks() -> None:
    raw = bytearray(read("tdx/gtg-v5-tdx15/quote.dat"))
    with pytest.raises(ParseError, match="minimum v5"):
        parse_quote(bytes(raw[:100]))
    bad = bytearray(raw)
    struct.pack_into("<H", bad, 0x30, 1)
    with pytest.raises(ParseError, match="unsupported TD quote body type"):
        parse_quote(bytes(bad))
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 0x32, 999)
    with pytest.raises(ParseError, match="does not match body type"):
        parse_quote(bytes(bad))
    bad = bytearray(raw)
    struct.pack_into("<HI", bad, 0x30, 2, 648)
    with pytest.raises(ParseError, match="expected 584"):
        parse_quote(bytes(bad))


def test_pck_chain_trailing_bytes() -> None:
    chain = parse_quote(read("tdx/gtg-spr-e4-v4/quote.dat")).pck_chain_pem
    parse_pck_chain(chain + b"\0")
    with pytest.raises(ParseError, match="unexpected bytes"):
        parse_pck_chain(chain + b"\x01")
    with pytest.raises(ParseError, match="exactly 3"):
        parse_pck_chain(chain[: chain.rindex(b"-----BEGIN")])


def test_flipping_each_signed_byte_fails() -> None:
    quote = read("tdx/gtg-spr-e4-v4/quote.dat")
    q = parse_quote(quote)
    for i in range(q.signed_size):
        raw = bytearray(quote)
        raw[i] ^= 0x01
        with pytest.raises(AttestationError):
            verify_tdx_quote(bytes(raw), now=T2023)


def test_flipping_qe_report_and_signatures_fails() -> None:
    quote = read("tdx/gtg-v5-tdx15/quote.dat")
    now = dt.datetime(2026, 2, 3, 1, tzinfo=dt.UTC)
    q = parse_quote(quote)
    sig_start = q.signed_size + 4
    qe_start = sig_start + 134
    for i in list(range(sig_start, sig_start + 128)) + list(range(qe_start, qe_start + 384 + 64 + 2 + 32)):
        raw = bytearray(quote)
        raw[i] ^= 0x01
        with pytest.raises(AttestationError):
            verify_tdx_quote(bytes(raw), now=now)


def test_extra_bytes_are_tolerated_but_not_signed() -> None:
    quote = read("tdx/gtg-cos113-v4/quote.dat")
    raw = bytearray(quote)
    raw[-1] = 0x55
    res = verify_tdx_quote(bytes(raw), now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert res.quote.extra[-1] == 0x55


def test_verification_result_is_frozen() -> None:
    res = verify_tdx_quote(read("tdx/gtg-cos113-v4/quote.dat"), now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.quote.body.__setattr__("mr_td", b"")
