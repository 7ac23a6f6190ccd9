"""SEV-SNP: every positive vector verifies and reproduces its facts; every negative fails for its reason."""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import pytest
from attvectors import at, read, vector, vectors

from attestation import (
    AttestationError,
    CertificateError,
    CertificateExpiredError,
    ParseError,
    SignatureError,
    VerificationError,
    verify_snp_attestation,
)
from attestation.claims import snp_claims
from attestation.snp import abi, certs
from attestation.snp.product import Product, TcbParts, compose_tcb, decompose_tcb, product_from_cpuid
from attestation.snp.verify import verify_report_signature
from attestation.trust import bundled_amd_roots, fingerprint

POSITIVE = vectors("snp-report")
NOW_FIXED = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _files(v: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    f = v["files"]
    vek = f.get("vcek") or f.get("vlek")
    return read(f["report"]["file"]), read(vek["file"]), read(f["cert_chain"]["file"])


@pytest.mark.parametrize("v", POSITIVE, ids=[v["id"] for v in POSITIVE])
def test_positive_vector_verifies_and_reproduces_facts(v: dict[str, Any]) -> None:
    report, vek, chain = _files(v)
    now = at(v["verify_at"]["recommended"])
    res = verify_snp_attestation(report, [vek, chain], now=now)
    assert res.product is Product(v["product"])
    assert fingerprint(res.ark) == v["expected"]["ark_sha256_der_must_equal_pinned"]
    assert "report_signature" in res.checks and "reported_tcb_matches_cert" in res.checks
    if v["expected"].get("chip_id_matches_hwid"):
        assert "chip_id_matches_hwid" in res.checks
    claims = snp_claims(res.report, res.product)
    for key, want in v["facts"].items():
        if key == "mbz_ok":
            continue
        assert claims[key] == want, key
    # Extensions of the signing certificate match the index.
    ext = res.extensions
    want_ext = v["signing_cert"]["amd_extensions"]
    assert ext.product_name == want_ext["productName"]
    assert (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl) == (
        want_ext["blSPL"],
        want_ext["teeSPL"],
        want_ext["snpSPL"],
        want_ext["ucodeSPL"],
    )
    assert (ext.hwid.hex() if ext.hwid else None) == want_ext.get("hwID")
    assert ext.csp_id == want_ext.get("cspID")
    sc = v["signing_cert"]
    assert certs.common_name(res.vek.subject) == sc["subject_cn"]
    assert certs.common_name(res.vek.issuer) == sc["issuer_cn"]
    assert hex(certs.serial_of(res.vek)) == sc["serial"]
    assert res.vek.not_valid_before_utc.isoformat() == sc["not_before"]
    assert res.vek.not_valid_after_utc.isoformat() == sc["not_after"]
    assert res.vek.signature_algorithm_oid.dotted_string == sc["sig_alg_oid"]
    assert fingerprint(res.vek) == sc["sha256_der"]


@pytest.mark.parametrize("v", POSITIVE, ids=[v["id"] for v in POSITIVE])
def test_signing_cert_alone_anchors_in_bundled_intermediates(v: dict[str, Any]) -> None:
    report, vek, _ = _files(v)
    res = verify_snp_attestation(report, [vek], now=at(v["verify_at"]["recommended"]))
    assert res.intermediate in (s.ask for s in bundled_amd_roots().sets) or res.intermediate in (
        s.asvk for s in bundled_amd_roots().sets
    )


@pytest.mark.parametrize(
    "v",
    [v for v in POSITIVE if "cert_table" in v["files"]],
    ids=[v["id"] for v in POSITIVE if "cert_table" in v["files"]],
)
def test_cert_table_vector(v: dict[str, Any]) -> None:
    table = read(v["files"]["cert_table"]["file"])
    entries = certs.parse_cert_table(table)
    import hashlib

    assert [(str(e.guid), hashlib.sha256(e.data).hexdigest()) for e in entries] == [
        (e["guid"], e["sha256_der"]) for e in v["files"]["cert_table"]["entries"]
    ]
    assert certs.serialize_cert_table(entries) == table
    res = verify_snp_attestation(
        read(v["files"]["report"]["file"]), cert_table=table, now=at(v["verify_at"]["recommended"])
    )
    assert "report_signature" in res.checks


def test_turin_vcek_only_vector() -> None:
    v = vector("snp/virtee-turin-vcek-only")
    vek = certs.load_certificate(read(v["files"]["vcek"]["file"]))
    ext = certs.parse_vek_extensions(vek)
    want = v["facts"]["amd_extensions"]
    assert ext.struct_version == 1 and ext.product is Product.TURIN
    assert ext.fmc_spl == want["fmcSPL"] and ext.ucode_spl == want["ucodeSPL"]
    assert ext.hwid is not None and ext.hwid.hex() == want["hwID"]
    roots = bundled_amd_roots().for_product(Product.TURIN)[0]
    assert roots.ask is not None
    vek.verify_directly_issued_by(roots.ask)
    roots.ask.verify_directly_issued_by(roots.ark)
    # Flipping one byte of the VCEK breaks the chain (virtee's test).
    raw = bytearray(read(v["files"]["vcek"]["file"]))
    raw[40] ^= 0xFF
    with pytest.raises((ValueError, Exception)):
        certs.load_certificate(bytes(raw)).verify_directly_issued_by(roots.ask)


# --- negative vectors --------------------------------------------------------------------------

NEGATIVE_EXPECT = {
    "negative/snp-sig-r-bitflip": SignatureError,
    "negative/snp-measurement-bitflip": SignatureError,
    "negative/snp-wrong-vcek": VerificationError,
    "negative/snp-truncated": ParseError,
    "negative/snp-truncated-signed-part-only": ParseError,
    "negative/snp-chain-genoa-ask": CertificateError,
    "negative/snp-vlek-with-vcek-chain": CertificateError,
    "negative/snp-vlek-expired": CertificateExpiredError,
}
NEGATIVES = vectors("negative-snp")


def test_every_negative_snp_vector_has_an_expectation() -> None:
    assert {v["id"] for v in NEGATIVES} == set(NEGATIVE_EXPECT)


@pytest.mark.parametrize("v", NEGATIVES, ids=[v["id"] for v in NEGATIVES])
def test_negative_vector_fails_with_listed_reason(v: dict[str, Any]) -> None:
    base = vector(v["derived_from"])
    report = (
        read(v["files"]["report"]["file"])
        if "files" in v and "report" in v["files"]
        else read(v.get("report") or base["files"]["report"]["file"])
    )
    signing = (
        read(v["use_signing_cert"])
        if "use_signing_cert" in v
        else read((base["files"].get("vcek") or base["files"]["vlek"])["file"])
    )
    if "files" in v and "cert_chain" in v["files"]:
        chain = read(v["files"]["cert_chain"]["file"])
    elif "use_cert_chain" in v:
        chain = read(v["use_cert_chain"])
    else:
        chain = read(base["files"]["cert_chain"]["file"])
    now = at(v["verify_at"]) if "verify_at" in v else at(base["verify_at"]["recommended"])
    with pytest.raises(NEGATIVE_EXPECT[v["id"]]) as info:
        verify_snp_attestation(report, [signing, chain], now=now)
    if v["id"] == "negative/snp-vlek-expired":
        assert "VLEK certificate has expired" in str(info.value)
    if v["id"] == "negative/snp-truncated":
        assert "exactly 1184" in str(info.value)
    # The raw signature facts recorded in the index agree with the outcome.
    if "signature_valid" in v.get("self_check", {}):
        rep = abi.parse_report(report)
        vek = certs.load_certificate(signing)
        if v["self_check"]["signature_valid"]:
            verify_report_signature(rep, vek)
        else:
            with pytest.raises(SignatureError):
                verify_report_signature(rep, vek)


# --- tamper: every signed byte ------------------------------------------------------------------


def test_flipping_any_signed_or_signature_byte_fails() -> None:
    v = vector("snp/gsg-milan-v2-vcek")
    report, vek_der, _ = _files(v)
    vek = certs.load_certificate(vek_der)
    for i in range(abi.SIGNATURE_OFFSET + 2 * abi.SIG_COMPONENT_SIZE):
        raw = bytearray(report)
        raw[i] ^= 0x01
        with pytest.raises(AttestationError):
            verify_report_signature(abi.parse_report(bytes(raw)), vek)


def test_full_verification_of_tampered_reports_fails() -> None:
    v = vector("snp/msft-milan-v3-vcek")
    report, vek, chain = _files(v)
    now = at(v["verify_at"]["recommended"])
    for i in range(0, abi.REPORT_SIZE, 37):
        raw = bytearray(report)
        raw[i] ^= 0x80
        with pytest.raises(AttestationError):
            verify_snp_attestation(bytes(raw), [vek, chain], now=now)


# --- strict parser ------------------------------------------------------------------------------

MBZ_CASES = [
    ("signer_info", 2, 0x49, 0xCC, "mbz range data[0x48:0x4C][0x5:0x1f]"),
    ("rsvd_4c", 2, 0x4F, 0xCC, "[0x4c:0x50]"),
    ("v2_cpuid", 2, 0x18A, 0xCC, "[0x188:0x1a0]"),
    ("v3_rsvd", 3, 0x18B, 0xCC, "[0x18b:0x1a0]"),
    ("build_rsvd", 2, 0x1EB, 0xCC, "[0x1eb:0x1ec]"),
    ("committed_rsvd", 2, 0x1EF, 0xCC, "[0x1ef:0x1f0]"),
    ("v4_mit", 4, 0x1F8, 0x01, "[0x1f8:0x2a0]"),
    ("v5_rsvd", 5, 0x209, 0xCC, "[0x208:0x2a0]"),
    ("sig_tail", 2, 0x2A0 + 0x90 + 2, 0xCC, "[0x330:0x4a0]"),
    ("r_high", 2, 0x2A0 + 50, 0x01, "[0x2d0:0x2e8]"),
    ("policy_bit17", 2, 0x0A, 0x1D, "policy[17] is reserved, must be 1, got 0"),
    ("policy_mbz", 2, 0x0B, 0x40, "mbz range policy[0x1a:0x3f]"),
    ("platform_unknown", 2, 0x41, 0x01, "unrecognized platform info bit(s): 0x100"),
]


def _with_version(report: bytes, version: int) -> bytearray:
    raw = bytearray(report)
    struct.pack_into("<I", raw, 0, version)
    return raw


@pytest.mark.parametrize("case", MBZ_CASES, ids=[c[0] for c in MBZ_CASES])
def test_reserved_bytes_are_rejected(case: tuple[str, int, int, int, str]) -> None:
    _, version, offset, value, message = case
    raw = _with_version(read("snp/gsg-milan-v2-vcek/report.bin"), version)
    abi.parse_report(bytes(raw))  # the unmodified report parses at this version
    raw[offset] = value
    with pytest.raises(ParseError) as info:
        abi.parse_report(bytes(raw))
    assert message in str(info.value)


def test_v3_cpuid_bytes_are_accepted_and_v5_mitigation_vectors_read() -> None:
    raw = _with_version(read("snp/gsg-milan-v2-vcek/report.bin"), 3)
    raw[0x188:0x18B] = b"\xcc\xcc\xcc"
    assert abi.parse_report(bytes(raw)).cpuid_fam_id == 0xCC
    raw = _with_version(read("snp/gsg-milan-v2-vcek/report.bin"), 5)
    raw[0x1F8] = 0x3F
    raw[0x200] = 0x1F
    rep = abi.parse_report(bytes(raw))
    assert (rep.launch_mit_vector, rep.current_mit_vector) == (0x3F, 0x1F)


@pytest.mark.parametrize("version", [0, 1, 6, 0xFFFFFFFF])
def test_unsupported_versions_are_rejected(version: int) -> None:
    raw = _with_version(read("snp/gsg-milan-v2-vcek/report.bin"), version)
    with pytest.raises(ParseError, match="VERSION"):
        abi.parse_report(bytes(raw))


@pytest.mark.parametrize("algo", [0, 2])
def test_signature_algorithm_must_be_ecdsa_p384(algo: int) -> None:
    raw = bytearray(read("snp/gsg-milan-v2-vcek/report.bin"))
    struct.pack_into("<I", raw, 0x34, algo)
    with pytest.raises(ParseError, match="SIGNATURE_ALGO"):
        abi.parse_report(bytes(raw))


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (0, set()),
        (3, {"smt_enabled", "tsme_enabled"}),
        (21, {"smt_enabled", "ecc_enabled", "ciphertext_hiding_dram_enabled"}),
        (42, {"tsme_enabled", "rapl_disabled", "alias_check_complete"}),
        (0x65, {"smt_enabled", "ecc_enabled", "alias_check_complete", "bit6"}),
    ],
)
def test_platform_info_bits(value: int, flags: set[str]) -> None:
    pi = abi.parse_platform_info(value)
    assert {k for k, v in vars(pi).items() if v} == flags


def test_signer_info_reserved_signing_key_rejected_and_none_is_unsigned() -> None:
    with pytest.raises(ParseError, match="SIGNING_KEY 2 is reserved"):
        abi.parse_signer_info(2 << 2)
    raw = bytearray(read("snp/gsg-milan-v2-vcek/report.bin"))
    struct.pack_into("<I", raw, 0x48, 7 << 2)
    with pytest.raises(SignatureError, match="unsigned"):
        verify_snp_attestation(bytes(raw), [read("snp/gsg-milan-v2-vcek/vcek.der")], now=NOW_FIXED)


def test_report_round_trip_is_exact() -> None:
    for v in POSITIVE:
        raw = read(v["files"]["report"]["file"])
        assert abi.parse_report(raw).to_bytes() == raw


@pytest.mark.parametrize(
    ("fam", "mod", "want"),
    [
        (0x19, 0x01, Product.MILAN),
        (0x19, 0x11, Product.GENOA),
        (0x19, 0xA0, Product.GENOA),
        (0x1A, 0x02, Product.TURIN),
        (0x17, 0x01, None),
        (0x19, 0x50, None),
    ],
)
def test_product_from_cpuid(fam: int, mod: int, want: Product | None) -> None:
    assert product_from_cpuid(fam, mod) is want


def test_tcb_layouts_per_product() -> None:
    assert decompose_tcb(bytes.fromhex("0101010400000051"), Product.TURIN) == TcbParts(
        fmc=1, bl=1, tee=1, snp=4, ucode=0x51
    )
    assert decompose_tcb(bytes.fromhex("0a00000000001754"), Product.GENOA) == TcbParts(
        bl=10, tee=0, snp=23, ucode=84
    )
    for product in Product:
        parts = TcbParts(bl=3, tee=2, snp=9, ucode=200, fmc=5 if product is Product.TURIN else None)
        assert decompose_tcb(compose_tcb(parts, product), product) == parts
    assert abi.tcb_u64(bytes.fromhex("0200000000000544")) == 4901323769462652930


def test_milan_vcek_with_genoa_roots_fails() -> None:
    v = vector("snp/gsg-milan-v2-vcek")
    report, vek, _ = _files(v)
    genoa_only = type(bundled_amd_roots())(
        tuple(s for s in bundled_amd_roots().sets if s.product is Product.GENOA)
    )
    with pytest.raises(CertificateError, match="no trusted ARK for product Milan"):
        verify_snp_attestation(report, [vek], trusted_roots=genoa_only, now=NOW_FIXED)


def test_missing_vcek_is_reported() -> None:
    v = vector("snp/gsg-milan-v2-vcek")
    report, _, chain = _files(v)
    with pytest.raises(CertificateError, match="VCEK certificate is missing"):
        verify_snp_attestation(report, [chain], now=NOW_FIXED)


def test_not_yet_valid_vcek_rejected() -> None:
    v = vector("snp/gsg-milan-v2-vcek")
    report, vek, chain = _files(v)
    with pytest.raises(CertificateExpiredError, match="not yet valid"):
        verify_snp_attestation(report, [vek, chain], now=dt.datetime(2022, 9, 23, tzinfo=dt.UTC))


def test_kds_urls() -> None:
    from attestation.snp import kds

    rep = abi.parse_report(read("snp/gsg-milan-v2-vcek/report.bin"))
    # The exact URL go-sev-guest's TestRealAttestationVerification serves the VCEK for.
    assert kds.vcek_url(rep, Product.MILAN) == (
        "https://kdsintf.amd.com/vcek/v1/Milan/3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e537861"
        "84ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"
    )
    assert kds.cert_chain_url(Product.GENOA, vlek=True) == "https://kdsintf.amd.com/vlek/v1/Genoa/cert_chain"
    assert kds.crl_url(Product.TURIN) == "https://kdsintf.amd.com/vcek/v1/Turin/crl"
    masked = abi.SnpReport(**{**vars(rep), "chip_id": bytes(64)})
    with pytest.raises(ValueError, match="masked"):
        kds.vcek_url(masked, Product.MILAN)
