"""Reference values (strict JSON), claim checks, Contrast's ID block, and the simulated SNP platform."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from attvectors import CONTRAST, read, vector
from cryptography.hazmat.primitives import hashes

from attestation import (
    CertificateError,
    Product,
    ReferenceValues,
    ReferenceValuesError,
    RevokedError,
    SignatureError,
    ValidationError,
    check_snp,
    check_tdx,
    verify_snp_attestation,
    verify_tdx_quote,
)
from attestation.snp import idblock
from attestation.snp.product import TcbParts
from attestation.testing import SimulatedAmdRoot, SimulatedSnpProvider, simulated_crl

MEASUREMENT = bytes.fromhex("dd" * 48)


def snp_entry(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "ProductName": "Milan",
        "TrustedMeasurement": MEASUREMENT.hex(),
        "MinimumTCB": {"BootloaderVersion": 2, "TEEVersion": 0, "SNPVersion": 2, "MicrocodeVersion": 2},
        "GuestPolicy": {
            "ABIMinor": 0,
            "ABIMajor": 0,
            "SMT": True,
            "MigrateMA": False,
            "Debug": False,
            "SingleSocket": False,
        },
        "PlatformInfo": {"SMTEnabled": True},
    }
    e.update(over)
    return e


@pytest.fixture(scope="module")
def milan_root() -> SimulatedAmdRoot:
    return SimulatedAmdRoot.generate(Product.MILAN)


@pytest.fixture(scope="module")
def sim(milan_root: SimulatedAmdRoot) -> SimulatedSnpProvider:
    return SimulatedSnpProvider(root=milan_root, measurement=MEASUREMENT, host_data=b"\x11" * 32)


# --- ReferenceValues JSON ------------------------------------------------------------------------


def test_manifest_base_documents_parse() -> None:
    cases = json.loads((CONTRAST / "manifest.json").read_text())
    snp = ReferenceValues.from_obj(cases["base_documents"]["snp"]["ReferenceValues"])
    assert snp.snp[0].product is Product.MILAN and snp.snp[0].trusted_measurement == MEASUREMENT
    tdx = ReferenceValues.from_json(json.dumps(cases["base_documents"]["tdx"]))
    assert tdx.tdx[0].minimum_qe_svn == 5 and tdx.tdx[0].rtmrs[0] == bytes.fromhex("55" * 48)


def _apply_patch(doc: Any, patch: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = doc
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target[p]
        last = parts[-1]
        if op["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        else:
            if isinstance(target, list):
                target[int(last)] = op["value"]
            else:
                target[last] = op["value"]
    return doc


def _rv_cases() -> list[dict[str, Any]]:
    cases = json.loads((CONTRAST / "manifest.json").read_text())["cases"]
    return [
        c
        for c in cases
        if any(p["path"].startswith("/ReferenceValues") for p in c["patch"]) or c["id"].startswith("valid")
    ]


@pytest.mark.parametrize("case", _rv_cases(), ids=[c["id"] for c in _rv_cases()])
def test_manifest_reference_value_cases(case: dict[str, Any]) -> None:
    base = json.loads((CONTRAST / "manifest.json").read_text())["base_documents"][case["base"]]
    doc = _apply_patch(base, case["patch"])
    if case["expect_valid"]:
        ReferenceValues.from_obj(doc["ReferenceValues"])
    else:
        with pytest.raises(ReferenceValuesError):
            ReferenceValues.from_obj(doc["ReferenceValues"])


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        (snp_entry(Unknown=1), "snp[0]"),
        (snp_entry(TrustedMeasurement="dd" * 47), "snp[0].TrustedMeasurement"),
        (snp_entry(TrustedMeasurement="zz" * 48), "snp[0].TrustedMeasurement"),
        (snp_entry(ProductName="Venice"), "snp[0].ProductName"),
        (snp_entry(GuestPolicy={"SMT": True, "Debug": True}), "snp[0].GuestPolicy.Debug"),
        (snp_entry(GuestPolicy={"SMT": True, "ABIMinor": 5}), "snp[0].GuestPolicy.ABIMinor"),
        (snp_entry(GuestPolicy={"SMT": True, "ABIMajor": 1}), "snp[0].GuestPolicy.ABIMajor"),
        (snp_entry(GuestPolicy={"SMT": "yes"}), "snp[0].GuestPolicy.SMT"),
        (snp_entry(GuestPolicy={"SMT": True, "Extra": False}), "snp[0].GuestPolicy"),
        (
            snp_entry(
                MinimumTCB={"BootloaderVersion": 256, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0}
            ),
            "snp[0].MinimumTCB.BootloaderVersion",
        ),
        (
            snp_entry(
                MinimumTCB={
                    "BootloaderVersion": True,
                    "TEEVersion": 0,
                    "SNPVersion": 0,
                    "MicrocodeVersion": 0,
                }
            ),
            "snp[0].MinimumTCB.BootloaderVersion",
        ),
        (snp_entry(AllowedChipIDs=["00" * 63]), "snp[0].AllowedChipIDs[0]"),
        (snp_entry(PlatformInfo={"Bogus": True}), "snp[0].PlatformInfo"),
        (snp_entry(APEIP="01020304"), "snp[0].APEIP"),
    ],
)
def test_invalid_snp_entries_name_their_path(entry: dict[str, Any], path: str) -> None:
    with pytest.raises(ReferenceValuesError) as info:
        ReferenceValues.from_obj({"snp": [entry]})
    assert info.value.path == path


def test_json_level_errors() -> None:
    with pytest.raises(ReferenceValuesError, match="invalid JSON"):
        ReferenceValues.from_json("{")
    with pytest.raises(ReferenceValuesError, match="duplicate key"):
        ReferenceValues.from_json('{"snp": [], "snp": []}')
    with pytest.raises(ReferenceValuesError, match="at least one"):
        ReferenceValues.from_json('{"snp": []}')
    with pytest.raises(ReferenceValuesError, match="unknown field"):
        ReferenceValues.from_json('{"sev": []}')


# --- Contrast ID block ---------------------------------------------------------------------------


def _idblock_cases() -> list[dict[str, Any]]:
    return json.loads((CONTRAST / "idblock.json").read_text())["cases"]


@pytest.mark.parametrize("case", _idblock_cases(), ids=[c["id"] for c in _idblock_cases()])
def test_id_block_derivation_matches_vectors(case: dict[str, Any]) -> None:
    ld = bytes.fromhex(case["launch_digest_hex"])
    policy = case["guest_policy_u64"]
    block = idblock.id_block(ld, policy)
    assert block.hex() == case["expected_id_block_hex"]
    digest = hashlib.sha384(block).digest()
    assert digest.hex() == case["id_block_sha384_hex"]
    cands = idblock.recover_candidates(digest)
    assert [(f"{x:096x}", f"{y:096x}") for x, y in cands] == [
        (c["x_hex"], c["y_hex"]) for c in case["recovered_candidates_sorted"]
    ]
    assert idblock.derive_id_key(ld, policy).hex() == case["id_key_0x404_hex"]
    assert idblock.id_key_digest(ld, policy).hex() == case["id_key_digest_sha384_hex"]
    assert hashlib.sha256(idblock.id_auth_block(ld, policy)).hexdigest() == case["id_auth_0x1000_sha256_hex"]


def test_recovered_id_keys_verify_the_fixed_signature() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

    digest = hashlib.sha384(idblock.id_block(MEASUREMENT, 0x30000)).digest()
    for x, y in idblock.recover_candidates(digest):
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
        key.verify(encode_dss_signature(2, 1), digest, ec.ECDSA(Prehashed(hashes.SHA384())))


# --- simulated platform end to end ---------------------------------------------------------------


def test_simulated_report_verifies_only_with_explicit_root(sim: SimulatedSnpProvider) -> None:
    ev = sim.get_evidence(b"nonce")
    res = verify_snp_attestation(ev.report, ev.certs, trusted_roots=sim.trusted_roots())
    assert res.report.report_data == b"nonce".ljust(64, b"\0")
    res2 = verify_snp_attestation(ev.report, cert_table=ev.cert_table, trusted_roots=sim.trusted_roots())
    assert res2.report == res.report
    with pytest.raises(CertificateError, match="not a trusted Milan ARK"):
        verify_snp_attestation(ev.report, ev.certs)
    with pytest.raises(CertificateError):
        verify_snp_attestation(ev.report, ev.certs[:1])  # VCEK alone against bundled AMD ASK


def test_simulated_report_passes_reference_values(sim: SimulatedSnpProvider) -> None:
    ev = sim.get_evidence(b"r" * 64)
    res = verify_snp_attestation(ev.report, ev.certs, trusted_roots=sim.trusted_roots())
    rv = ReferenceValues.from_obj({"snp": [snp_entry()]})
    assert check_snp(res, rv, report_data=b"r" * 64, host_data=b"\x11" * 32) is rv.snp[0]


def test_mismatches_name_field_expected_and_got(sim: SimulatedSnpProvider) -> None:
    ev = sim.get_evidence(b"r" * 64)
    res = verify_snp_attestation(ev.report, ev.certs, trusted_roots=sim.trusted_roots())
    other = "ee" * 48
    rv = ReferenceValues.from_obj(
        {
            "snp": [
                snp_entry(TrustedMeasurement=other),
                snp_entry(
                    MinimumTCB={
                        "BootloaderVersion": 9,
                        "TEEVersion": 0,
                        "SNPVersion": 2,
                        "MicrocodeVersion": 2,
                    },
                    AllowedChipIDs=["00" * 64],
                    PlatformInfo={"SMTEnabled": False},
                ),
            ]
        }
    )
    with pytest.raises(ValidationError) as info:
        check_snp(res, rv, report_data=b"x" * 64)
    err = info.value
    assert len(err.per_entry) == 2
    first = {m.field: m for m in err.per_entry[0]}
    assert first["measurement"].expected == other and first["measurement"].got == MEASUREMENT.hex()
    assert "id_key_digest" in first and "report_data" in first
    second = {m.field for m in err.per_entry[1]}
    assert {
        "current_tcb",
        "reported_tcb",
        "committed_tcb",
        "launch_tcb",
        "chip_id",
        "platform_info.smt_enabled",
        "report_data",
    } <= second
    assert "measurement is" in str(err)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"policy": 0x30000 | (1 << 19)}, "policy.debug"),
        ({"policy": 0x30000 | (1 << 18)}, "policy.migrate_ma"),
        ({"vmpl": 1}, "vmpl"),
        ({"id_block": False}, "id_key_digest"),
        ({"host_data": b"\x22" * 32}, "host_data"),
        ({"tcb": TcbParts(bl=1, tee=0, snp=22, ucode=213)}, "reported_tcb"),
    ],
)
def test_each_claim_is_checked(milan_root: SimulatedAmdRoot, kwargs: dict[str, Any], field: str) -> None:
    params: dict[str, Any] = {"measurement": MEASUREMENT, "host_data": b"\x11" * 32}
    params.update(kwargs)
    sim = SimulatedSnpProvider(root=milan_root, **params)
    res = verify_snp_attestation(
        sim.make_report(b""), [sim.vcek, milan_root.ask], trusted_roots=milan_root.roots()
    )
    with pytest.raises(ValidationError) as info:
        check_snp(res, ReferenceValues.from_obj({"snp": [snp_entry()]}), host_data=b"\x11" * 32)
    assert field in info.value.fields


def test_mitigation_vector_requires_v5(milan_root: SimulatedAmdRoot) -> None:
    rv = ReferenceValues.from_obj({"snp": [snp_entry(MinimumMitigationVector=1)]})
    # v3 has no mitigation vectors at all; the simulated v5 report has vector 0.
    for version in (3, 5):
        sim = SimulatedSnpProvider(root=milan_root, measurement=MEASUREMENT, version=version)
        res = verify_snp_attestation(sim.make_report(b""), [sim.vcek], trusted_roots=milan_root.roots())
        with pytest.raises(ValidationError) as info:
            check_snp(res, rv)
        assert "launch_mit_vector" in info.value.fields


def test_product_mismatch_is_reported(sim: SimulatedSnpProvider) -> None:
    res = verify_snp_attestation(sim.make_report(b""), [sim.vcek], trusted_roots=sim.trusted_roots())
    with pytest.raises(ValidationError) as info:
        check_snp(res, ReferenceValues.from_obj({"snp": [snp_entry(ProductName="Genoa")]}))
    assert "product" in info.value.fields


def test_turin_simulated_v5(tmp_path: Any) -> None:
    root = SimulatedAmdRoot.generate(Product.TURIN)
    root.save(tmp_path)
    assert (tmp_path / "ark.key").stat().st_mode & 0o777 == 0o600
    loaded = SimulatedAmdRoot.load(tmp_path)
    sim = SimulatedSnpProvider(root=loaded, version=5, measurement=MEASUREMENT)
    res = verify_snp_attestation(sim.make_report(b"t"), [sim.vcek], trusted_roots=root.roots())
    assert res.product is Product.TURIN and res.report.launch_mit_vector == 0
    assert res.report.chip_id[8:] == bytes(56)
    rv = ReferenceValues.from_obj({"snp": [snp_entry(ProductName="Turin")]})
    check_snp(res, rv)


def test_crl_checks_with_simulated_ark(milan_root: SimulatedAmdRoot, sim: SimulatedSnpProvider) -> None:
    now = dt.datetime.now(dt.UTC)

    def crl(revoke: list[int], signer: Any = None) -> bytes:
        return simulated_crl(milan_root, tuple(revoke), now=now, signer=signer)

    ev = sim.get_evidence(b"")
    res = verify_snp_attestation(ev.report, ev.certs, trusted_roots=milan_root.roots(), crl=crl([12345]))
    assert "crl" in res.checks
    with pytest.raises(RevokedError, match="ASK was revoked"):
        verify_snp_attestation(
            ev.report, ev.certs, trusted_roots=milan_root.roots(), crl=crl([milan_root.ask.serial_number])
        )
    with pytest.raises(SignatureError, match="CRL is not signed by ARK"):
        verify_snp_attestation(
            ev.report, ev.certs, trusted_roots=milan_root.roots(), crl=crl([], milan_root.ask_key)
        )


# --- TDX reference values ------------------------------------------------------------------------


def _tdx_entry(quote_facts: dict[str, Any], **over: Any) -> dict[str, Any]:
    b = quote_facts["td_quote_body"]
    e: dict[str, Any] = {
        "MrTd": b["mrtd"],
        "MrSeam": b["mrseam"],
        "Xfam": b["xfam"],
        "Rtmrs": [b[f"rtmr{i}"] for i in range(4)],
    }
    e.update(over)
    return e


def test_check_tdx_against_vector() -> None:
    v = vector("tdx/gtg-v5-tdx15")
    res = verify_tdx_quote(read(v["files"]["quote"]["file"]), now=dt.datetime(2026, 2, 3, 1, tzinfo=dt.UTC))
    rv = ReferenceValues.from_obj({"tdx": [_tdx_entry(v["facts"])]})
    report_data = bytes.fromhex(v["facts"]["td_quote_body"]["report_data"])
    assert check_tdx(res, rv, report_data=report_data) is rv.tdx[0]
    with pytest.raises(ValidationError) as info:
        check_tdx(
            res,
            ReferenceValues.from_obj(
                {"tdx": [_tdx_entry(v["facts"], MrTd="00" * 48, MinTCBEvaluationDataNumber=17)]}
            ),
        )
    assert set(info.value.fields) == {"mr_td", "tcb_evaluation_data_number"}


def test_tdx_debug_attribute_rejected() -> None:
    v = vector("tdx/trustee-spr-v4")
    res = verify_tdx_quote(read(v["files"]["quote"]["file"]), now=dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValidationError) as info:
        check_tdx(res, ReferenceValues.from_obj({"tdx": [_tdx_entry(v["facts"])]}))
    assert info.value.fields == ["td_attributes"]
    m = info.value.mismatches[0]
    assert (m.expected, m.got) == ("0000001000000000", "0100001000000000")


def test_tdx_pck_options() -> None:
    v = vector("tdx/gtg-cos113-v4")
    res = verify_tdx_quote(read(v["files"]["quote"]["file"]), now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    piid = res.pck.platform_instance_id
    assert piid is not None
    entry = _tdx_entry(v["facts"], AllowedPIIDs=[piid.hex()])
    check_tdx(res, ReferenceValues.from_obj({"tdx": [entry]}), mr_config_id=bytes(48))
    with pytest.raises(ValidationError) as info:
        check_tdx(
            res,
            ReferenceValues.from_obj(
                {"tdx": [_tdx_entry(v["facts"], AllowedPIIDs=["00" * 16], MemoryIntegrity=True)]}
            ),
        )
    assert set(info.value.fields) == {"piid", "sgx_type"}
    with pytest.raises(ValidationError, match="mr_config_id"):
        check_tdx(res, ReferenceValues.from_obj({"tdx": [entry]}), mr_config_id=b"\x01" * 32)
