"""TDX evidence: byte-exact QuoteV4 round trip on real quotes; validation through the attestation core."""

from __future__ import annotations

import datetime
import json

import pytest

from attestation.atls import AtlsError
from attestation.atls.platforms import EvidenceFormatError
from attestation.atls.proto import tdx_pb2
from attestation.atls.tdx import TdxValidator, decode_tdx, encode_tdx, proto_to_quote, quote_to_proto
from attestation.reference_values import ReferenceValues
from attestation.revocation import CollateralDirectory
from attestation.tdx.quote import parse_quote
from tests.support import shared_path

TESTDATA = shared_path("attestation")
INDEX = json.loads((TESTDATA / "index.json").read_text())
COLLATERAL = CollateralDirectory(TESTDATA / "tdx" / "collateral" / "gtg-2023")
V4 = [v for v in INDEX["vectors"] if v["id"].startswith("tdx/") and v.get("quote_version") == 4]


def quote_of(vector: dict[str, object]) -> bytes:
    return (TESTDATA / str(vector["id"]) / "quote.dat").read_bytes()


@pytest.mark.parametrize("vector", V4, ids=lambda v: v["id"])
def test_quote_proto_roundtrip(vector: dict[str, object]) -> None:
    raw = quote_of(vector)
    msg = quote_to_proto(raw)
    assert proto_to_quote(msg) == raw
    assert decode_tdx(encode_tdx(raw)) == raw
    q = parse_quote(raw)
    assert msg.td_quote_body.mr_td == q.body.mr_td and list(msg.td_quote_body.rtmrs) == list(q.body.rtmrs)


def _rv(raw: bytes, mr_td: bytes | None = None) -> ReferenceValues:
    q = parse_quote(raw)
    entry = {
        "MrTd": (mr_td or q.body.mr_td).hex(), "MrSeam": q.body.mr_seam.hex(),
        "Rtmrs": [r.hex() for r in q.body.rtmrs], "Xfam": q.body.xfam.hex(),
    }
    return ReferenceValues.from_obj({"tdx": [entry]})


def test_validator_on_real_quote() -> None:
    """The fixture verifies (signature, QE report, PCK chain); its claims then fail Contrast's TDX policy
    on TD_ATTRIBUTES (a debug TD), and a wrong MRTD is named as such."""
    vector = next(v for v in V4 if v["id"] == "tdx/trustee-spr-v4")
    raw = quote_of(vector)
    when = str(vector["verify_at"]["recommended"])  # type: ignore[index]
    now = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
    q = parse_quote(raw)
    with pytest.raises(AtlsError, match="validating quote: td_attributes is 0100001000000000") as err:
        validator = TdxValidator(_rv(raw).tdx, revocation=COLLATERAL, now=now)
        validator.validate(encode_tdx(raw), q.body.report_data)
    assert "mr_td" not in str(err.value)
    with pytest.raises(AtlsError, match=r"validating quote: .*mr_td"):
        TdxValidator(_rv(raw, b"\1" * 48).tdx, revocation=COLLATERAL, now=now).validate(
            encode_tdx(raw), q.body.report_data
        )


def test_validator_refuses_without_collateral() -> None:
    """Attack: the Coordinator used to build its TDX validator without collateral, so a revoked PCK or an
    OutOfDate TCB passed. Without a collateral source the quote is now refused, with the reason."""
    vector = next(v for v in V4 if v["id"] == "tdx/trustee-spr-v4")
    raw = quote_of(vector)
    now = datetime.datetime(2023, 7, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(AtlsError, match="verifying quote: no TDX collateral source is configured"):
        TdxValidator(_rv(raw).tdx, now=now).validate(encode_tdx(raw), parse_quote(raw).body.report_data)
    # The go-tdx-guest quote matches no TCB level of its platform's collateral: refused, not "not evaluated".
    other = quote_of(next(v for v in V4 if v["id"] == "tdx/gtg-spr-e4-v4"))
    with pytest.raises(AtlsError, match="no matching TCB level"):
        TdxValidator(_rv(other).tdx, revocation=COLLATERAL, now=now).validate(
            encode_tdx(other), parse_quote(other).body.report_data
        )


def test_rejections() -> None:
    raw = quote_of(V4[0])
    with pytest.raises(EvidenceFormatError):
        decode_tdx(b"\xff\xff\xff")
    msg = quote_to_proto(raw)
    del msg.td_quote_body.rtmrs[3]
    with pytest.raises(EvidenceFormatError, match="4"):
        proto_to_quote(msg)
    msg = quote_to_proto(raw)
    msg.td_quote_body.report_data = b"\2" * 64  # not covered by the quote signature any more
    with pytest.raises(AtlsError, match="verifying quote"):
        TdxValidator(_rv(raw).tdx).validate(msg.SerializeToString(), b"\2" * 64)
    assert tdx_pb2.QuoteV4.FromString(encode_tdx(raw)).header.version == 4
