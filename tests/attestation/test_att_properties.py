"""Hypothesis properties: parsers round-trip, and arbitrary or mutated input either parses or raises
our own typed errors, never anything else."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from typing import Any

from attvectors import VECTORS, read
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import (
    AttestationError,
    ParseError,
    ReferenceValues,
    ReferenceValuesError,
    _der,
    verify_tdx_quote,
)
from attestation.snp import abi, certs
from attestation.snp.product import Product, TcbParts, compose_tcb, decompose_tcb
from attestation.tdx import collateral as coll
from attestation.tdx.quote import parse_quote, quote_to_bytes

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SNP_REPORT = read("snp/msft-milan-v3-vcek/report.bin")
TDX_QUOTE = read("tdx/gtg-v5-tdx15/quote.dat")
TCB_INFO = (VECTORS / "tdx/collateral/gtg-2023/tcb_info_fmspc_50806f000000.json").read_bytes()


def b(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


@st.composite
def snp_reports(draw: st.DrawFn) -> abi.SnpReport:
    version = draw(st.integers(2, 5))
    v3, v5 = version >= 3, version >= 5
    policy = draw(st.integers(0, (1 << 26) - 1)) | abi.POLICY_RESERVED_ONE
    signer = draw(st.integers(0, 3)) | (draw(st.sampled_from([0, 1, 7])) << 2)
    return abi.SnpReport(
        version=version,
        guest_svn=draw(st.integers(0, 2**32 - 1)),
        policy=policy,
        family_id=draw(b(16)),
        image_id=draw(b(16)),
        vmpl=draw(st.integers(0, 3)),
        signature_algo=1,
        current_tcb=draw(b(8)),
        platform_info=draw(st.integers(0, 255)),
        signer_info=signer,
        report_data=draw(b(64)),
        measurement=draw(b(48)),
        host_data=draw(b(32)),
        id_key_digest=draw(b(48)),
        author_key_digest=draw(b(48)),
        report_id=draw(b(32)),
        report_id_ma=draw(b(32)),
        reported_tcb=draw(b(8)),
        cpuid_fam_id=draw(st.integers(0, 255)) if v3 else None,
        cpuid_mod_id=draw(st.integers(0, 255)) if v3 else None,
        cpuid_step=draw(st.integers(0, 255)) if v3 else None,
        chip_id=draw(b(64)),
        committed_tcb=draw(b(8)),
        current_build=draw(st.integers(0, 255)),
        current_minor=draw(st.integers(0, 255)),
        current_major=draw(st.integers(0, 255)),
        committed_build=draw(st.integers(0, 255)),
        committed_minor=draw(st.integers(0, 255)),
        committed_major=draw(st.integers(0, 255)),
        launch_tcb=draw(b(8)),
        launch_mit_vector=draw(st.integers(0, 2**64 - 1)) if v5 else None,
        current_mit_vector=draw(st.integers(0, 2**64 - 1)) if v5 else None,
        signature_r=draw(st.integers(0, 2**384 - 1)),
        signature_s=draw(st.integers(0, 2**384 - 1)),
        raw=b"",
    )


@SETTINGS
@given(snp_reports())
def test_snp_report_round_trip(report: abi.SnpReport) -> None:
    raw = abi.report_to_bytes(report)
    parsed = abi.parse_report(raw)
    assert parsed.raw == raw
    assert parsed == abi.SnpReport(**{**vars(report), "raw": raw})
    assert parsed.to_bytes() == raw


@SETTINGS
@given(st.binary(min_size=0, max_size=1300))
def test_snp_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        abi.parse_report(data)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, abi.REPORT_SIZE - 1), st.integers(0, 255)), max_size=8))
def test_snp_mutated_report_parses_exactly_or_fails_typed(edits: list[tuple[int, int]]) -> None:
    raw = bytearray(SNP_REPORT)
    for i, v in edits:
        raw[i] = v
    try:
        parsed = abi.parse_report(bytes(raw))
    except ParseError:
        return
    assert parsed.to_bytes() == bytes(raw)


@SETTINGS
@given(st.lists(st.tuples(st.uuids(), st.binary(max_size=300)), max_size=6, unique_by=lambda t: t[0]))
def test_cert_table_round_trip(items: list[tuple[uuid.UUID, bytes]]) -> None:
    entries = [certs.CertTableEntry(g, d) for g, d in items if g.int != 0]
    blob = certs.serialize_cert_table(entries)
    assert certs.parse_cert_table(blob) == entries


@SETTINGS
@given(st.binary(max_size=400))
def test_cert_table_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        certs.parse_cert_table(data)


@SETTINGS
@given(st.binary(max_size=200))
def test_der_reader_only_raises_parse_error(data: bytes) -> None:
    try:
        for _tag, value in _der.iter_sequence(data, field="x"):
            _der.decode_integer(value, field="x") if value else None
            _der.decode_oid(value, field="x") if value else None
    except ParseError:
        pass


@SETTINGS
@given(st.integers(0, 2**64 - 1))
def test_der_integer_round_trip(n: int) -> None:
    assert _der.parse_integer(_der.encode_integer(n), field="n") == n


@SETTINGS
@given(
    st.sampled_from(list(Product)),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_tcb_round_trip(product: Product, bl: int, tee: int, snp: int, ucode: int, fmc: int) -> None:
    parts = TcbParts(bl=bl, tee=tee, snp=snp, ucode=ucode, fmc=fmc if product is Product.TURIN else None)
    assert decompose_tcb(compose_tcb(parts, product), product) == parts


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(TDX_QUOTE) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_tdx_mutated_quote_fails_typed(edits: list[tuple[int, int]]) -> None:
    raw = bytearray(TDX_QUOTE)
    for i, v in edits:
        raw[i] = v
    with contextlib.suppress(AttestationError):
        verify_tdx_quote(bytes(raw), now=dt.datetime(2026, 2, 3, 1, tzinfo=dt.UTC))


@SETTINGS
@given(st.binary(max_size=2000))
def test_tdx_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_quote(data)


@SETTINGS
@given(st.integers(0, len(TCB_INFO) - 1), st.binary(min_size=1, max_size=4))
def test_tcb_info_mutations(pos: int, insert: bytes) -> None:
    with contextlib.suppress(ParseError):
        coll.parse_tcb_info(TCB_INFO[:pos] + insert + TCB_INFO[pos + len(insert) :])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "snp",
        "tdx",
        "ProductName",
        "TrustedMeasurement",
        "MinimumTCB",
        "GuestPolicy",
        "MrTd",
        "MrSeam",
        "Rtmrs",
        "Xfam",
        "SMT",
        "BootloaderVersion",
    ]
)


@SETTINGS
@given(
    st.dictionaries(KEYS, JSON | st.lists(st.dictionaries(KEYS, JSON, max_size=6), max_size=2), max_size=3)
)
def test_reference_values_arbitrary_json(obj: dict[str, Any]) -> None:
    with contextlib.suppress(ReferenceValuesError):
        ReferenceValues.from_json(json.dumps(obj))


def test_tdx_vectors_round_trip() -> None:
    for name in ("gtg-spr-e4-v4", "gtg-v5-tdx15", "gtg-cos113-v4", "trustee-spr-v4"):
        raw = read(f"tdx/{name}/quote.dat")
        assert quote_to_bytes(parse_quote(raw)) == raw


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, len(TDX_QUOTE) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    st.binary(max_size=40),
)
def test_tdx_mutated_quote_round_trips_when_it_parses(edits: list[tuple[int, int]], tail: bytes) -> None:
    raw = bytearray(TDX_QUOTE)
    for i, v in edits:
        raw[i] = v
    data = bytes(raw) + tail
    try:
        q = parse_quote(data)
    except ParseError:
        return
    assert quote_to_bytes(q) == data
