"""TDX collateral and policy cases no real vector covers, on the simulated TDX platform."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from attestation import (
    CertificateError,
    CertificateExpiredError,
    ReferenceValues,
    RevokedError,
    SignatureError,
    TcbStatusError,
    TdxCollateral,
    ValidationError,
    check_tdx,
    local_host_data,
    verify_tdx_quote,
)
from attestation.testing import SimulatedTdxProvider


@pytest.fixture(scope="module")
def sim() -> SimulatedTdxProvider:
    return SimulatedTdxProvider(mr_td=b"\x11" * 48, mr_config_id=b"\x22" * 32 + bytes(16))


def entry(sim: SimulatedTdxProvider, **over: object) -> dict[str, object]:
    e: dict[str, object] = {
        "MrTd": sim.mr_td.hex(),
        "MrSeam": sim.mr_seam.hex(),
        "Xfam": sim.xfam.hex(),
        "Rtmrs": [r.hex() for r in sim.rtmrs],
    }
    e.update(over)
    return e


def test_full_verification_only_with_explicit_root(sim: SimulatedTdxProvider) -> None:
    quote = sim.make_quote(b"n")
    res = verify_tdx_quote(quote, collateral=sim.collateral(), trusted_root=sim.root.root)
    assert res.tcb_status == "UpToDate" and res.qe_tcb_status == "UpToDate"
    with pytest.raises(CertificateError, match="trusted Intel SGX Root CA"):
        verify_tdx_quote(quote)
    assert local_host_data(sim.get_evidence(b"")) == sim.mr_config_id


def test_revoked_pck(sim: SimulatedTdxProvider) -> None:
    with pytest.raises(RevokedError, match="PCK CRL"):
        verify_tdx_quote(
            sim.make_quote(b""), collateral=sim.collateral(revoked_pck=True), trusted_root=sim.root.root
        )


def test_tcb_levels_and_accepted_statuses(sim: SimulatedTdxProvider) -> None:
    col = sim.collateral(statuses=("UpToDate", "OutOfDate"))
    with pytest.raises(TcbStatusError) as info:
        verify_tdx_quote(sim.make_quote(b""), collateral=col, trusted_root=sim.root.root)
    assert info.value.status == "OutOfDate"
    res = verify_tdx_quote(
        sim.make_quote(b""),
        collateral=col,
        trusted_root=sim.root.root,
        accepted_tcb_statuses=("UpToDate", "OutOfDate"),
    )
    assert res.tcb_status == "OutOfDate"
    res = verify_tdx_quote(
        sim.make_quote(b""),
        collateral=sim.collateral(statuses=("SWHardeningNeeded",)),
        trusted_root=sim.root.root,
        accepted_tcb_statuses=("UpToDate", "SWHardeningNeeded"),
    )
    assert res.tcb_status == "SWHardeningNeeded"


def test_qe_tcb_status(sim: SimulatedTdxProvider) -> None:
    with pytest.raises(TcbStatusError) as info:
        verify_tdx_quote(
            sim.make_quote(b""), collateral=sim.collateral(qe_status="Revoked"), trusted_root=sim.root.root
        )
    assert info.value.status == "Revoked" and info.value.step == "qe_tcb_status"


def test_expired_crl(sim: SimulatedTdxProvider) -> None:
    col = sim.collateral(crl_valid_for=dt.timedelta(days=1))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with pytest.raises(CertificateExpiredError, match="CRL"):
        verify_tdx_quote(sim.make_quote(b""), collateral=col, trusted_root=sim.root.root, now=later)


def test_forged_collateral_signature(sim: SimulatedTdxProvider) -> None:
    col = sim.collateral()
    forged = TdxCollateral(
        **{
            **vars(col),
            "tcb_info": col.tcb_info.replace(
                b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":99'
            ),
        }
    )
    assert forged.tcb_info != col.tcb_info
    with pytest.raises(SignatureError, match="tcbInfo signature"):
        verify_tdx_quote(sim.make_quote(b""), collateral=forged, trusted_root=sim.root.root)


def test_pck_based_reference_values(sim: SimulatedTdxProvider) -> None:
    res = verify_tdx_quote(sim.make_quote(b"r"), collateral=sim.collateral(), trusted_root=sim.root.root)
    assert sim.piid is not None
    ok = ReferenceValues.from_json(
        json.dumps({"tdx": [entry(sim, AllowedPIIDs=[sim.piid.hex()], MinTCBEvaluationDataNumber=17)]})
    )
    check_tdx(res, ok, report_data=b"r".ljust(64, b"\0"), mr_config_id=b"\x22" * 32)
    strict = ReferenceValues.from_json(
        json.dumps(
            {
                "tdx": [
                    entry(
                        sim,
                        MemoryIntegrity=True,
                        SMTDisabled=True,
                        StaticPlatform=True,
                        MinTCBEvaluationDataNumber=18,
                        AllowedPIIDs=["00" * 16],
                    )
                ]
            }
        )
    )
    with pytest.raises(ValidationError) as info:
        check_tdx(res, strict)
    assert set(info.value.fields) == {
        "sgx_type",
        "smt_enabled",
        "dynamic_platform",
        "tcb_evaluation_data_number",
        "piid",
    }
    # Without collateral the evaluation data number cannot be shown.
    bare = verify_tdx_quote(sim.make_quote(b"r"), trusted_root=sim.root.root)
    with pytest.raises(ValidationError, match="not evaluated"):
        check_tdx(bare, ok)


def test_debug_td_rejected() -> None:
    debug = SimulatedTdxProvider(td_attributes=(1 | (1 << 28)).to_bytes(8, "little"))
    res = verify_tdx_quote(debug.make_quote(b""), trusted_root=debug.root.root)
    with pytest.raises(ValidationError) as info:
        check_tdx(res, ReferenceValues.from_json(json.dumps({"tdx": [entry(debug)]})))
    assert info.value.fields == ["td_attributes"]
