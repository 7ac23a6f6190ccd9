"""Every SNP/SEV/SEV-ES case of testdata/measure/index.json, reproduced by image.measure."""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from typing import Any

import pytest

from image.measure import (
    BootHashes,
    MeasureError,
    UnsupportedInputError,
    VmmType,
    ovmf_pages_digest,
    parse_firmware,
    parse_vcpu,
    sev_digest,
    seves_digest,
    snp_launch_digest,
    svsm_launch_digest,
)
from image.measure.digest import LaunchDigest
from image.measure.snp import seves_vmsa_pages, snp_vmsa_pages, svsm_parse, svsm_vmsa_pages
from image.measure.vmsa import VCPU_SIGNATURES, cpu_signature
from tests.measure.vectors import DEBIAN_OVMF, DEBIAN_OVMF_SHA256, MEASURE, blob, hex_or_none, index

SNP = index()["snp"]


def _boot(case: dict[str, Any]) -> BootHashes | None:
    kernel = blob(case.get("kernel"))
    if kernel is None:
        return None
    return BootHashes.of(kernel, blob(case.get("initrd")), case.get("append"))


def measure_case(case: dict[str, Any], firmware: bytes) -> bytes:
    fw = parse_firmware(firmware)
    mode = case["mode"]
    sig = hex_or_none(case.get("vcpu_sig"))
    features = hex_or_none(case.get("guest_features"))
    vmm = VmmType(case.get("vmm_type") or "QEMU")
    if mode == "snp":
        seed = LaunchDigest(bytes.fromhex(case["ovmf_hash"])) if case.get("ovmf_hash") else None
        return snp_launch_digest(
            fw, case["vcpus"], sig, 0x1 if features is None else features, _boot(case), vmm, seed
        )
    if mode == "snp:ovmf-hash":
        return ovmf_pages_digest(fw).value
    if mode == "seves":
        return seves_digest(fw, case["vcpus"], sig, _boot(case), vmm)
    if mode == "sev":
        return sev_digest(fw, _boot(case))
    if mode == "snp:svsm":
        assert sig is not None
        return svsm_launch_digest(
            fw, (MEASURE / case["svsm"]).read_bytes(), case["vars_size"], case["vcpus"], sig
        )
    raise AssertionError(f"unknown mode {mode}")


def _expected(case: dict[str, Any]) -> tuple[str | None, str | None]:
    error = case.get("expected_error")
    if error:
        return None, error.removeprefix("Error: ")
    return case.get("expected") or case.get("oracle_digest"), None


CASES = [c for c in SNP["upstream_cases"] + SNP["synthetic_cases"]]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_digest_case(case: dict[str, Any]) -> None:
    expected, error = _expected(case)
    firmware = (MEASURE / case["ovmf"]).read_bytes()
    if error is not None:
        with pytest.raises(UnsupportedInputError) as info:
            measure_case(case, firmware)
        assert str(info.value) == error
        return
    got = measure_case(case, firmware)
    if case.get("output_format") == "base64":
        assert base64.b64encode(got).decode() == expected
    else:
        assert got.hex() == expected


DUMP_CASES = [c for c in SNP["upstream_cases"] if c.get("oracle_vmsa_files")]


@pytest.mark.parametrize("case", DUMP_CASES, ids=[c["id"] for c in DUMP_CASES])
def test_dump_vmsa_case(case: dict[str, Any]) -> None:
    """Upstream checks which vmsaN.bin files appear; we check their count and their bytes."""
    fw = parse_firmware((MEASURE / case["ovmf"]).read_bytes())
    sig = hex_or_none(case["vcpu_sig"])
    assert sig is not None
    if case["mode"] == "snp":
        pages = list(snp_vmsa_pages(fw, case["vcpus"], sig, hex_or_none(case["guest_features"]) or 0))
    elif case["mode"] == "seves":
        pages = list(seves_vmsa_pages(fw, case["vcpus"], sig))
    else:
        svsm = svsm_parse(fw, (MEASURE / case["svsm"]).read_bytes(), case["vars_size"])
        pages = list(svsm_vmsa_pages(svsm, case["vcpus"], sig))
    want = case["oracle_vmsa_files"]
    assert [f"vmsa{i}.bin" for i in range(len(pages))] == sorted(want)
    for i, page in enumerate(pages):
        assert hashlib.sha256(page).hexdigest() == want[f"vmsa{i}.bin"]["sha256"]


@pytest.mark.parametrize("case", SNP["vmsa_pages"], ids=[c["id"] for c in SNP["vmsa_pages"]])
def test_vmsa_pages(case: dict[str, Any]) -> None:
    fw = parse_firmware((MEASURE / case["ovmf"]).read_bytes())
    vmm = VmmType(case["vmm_type"])
    sig = None if vmm is VmmType.GCE else parse_vcpu(case["vcpu_type"])
    features = hex_or_none(case["guest_features"]) or 0
    if case["mode"] == "snp":
        pages = list(snp_vmsa_pages(fw, case["vcpus"], sig, features, vmm))
        digest = snp_launch_digest(fw, case["vcpus"], sig, features, None, vmm).hex()
    elif case["mode"] == "seves":
        assert sig is not None
        pages = list(seves_vmsa_pages(fw, case["vcpus"], sig, vmm))
        digest = seves_digest(fw, case["vcpus"], sig, None, vmm).hex()
    else:
        assert sig is not None
        svsm_image = (MEASURE / case["svsm"]).read_bytes()
        pages = list(svsm_vmsa_pages(svsm_parse(fw, svsm_image, case["vars_size"]), case["vcpus"], sig))
        digest = svsm_launch_digest(fw, svsm_image, case["vars_size"], case["vcpus"], sig).hex()
    assert digest == case["oracle_digest"]
    for page, f in zip(pages, case["files"], strict=True):
        assert page == (MEASURE / f["file"]).read_bytes()


@pytest.mark.parametrize("case", SNP["sev_hashes_tables"], ids=[c["id"] for c in SNP["sev_hashes_tables"]])
def test_sev_hashes_table(case: dict[str, Any]) -> None:
    boot = _boot(case)
    assert boot is not None
    assert boot.table().hex() == case["expected_table_hex"]
    assert len(boot.table()) == case["length"]
    assert hashlib.sha384(boot.page(0xC00)).hexdigest() == case["expected_page_sha384_at_offset_0xc00"]


def test_hashes_table_must_fit_its_page() -> None:
    with pytest.raises(UnsupportedInputError, match="does not fit"):
        BootHashes.of(b"").page(0x1000 - 175)


@pytest.mark.parametrize("case", SNP["cpu_sig_cases"], ids=lambda c: str(c["expected"]))
def test_cpu_signature(case: dict[str, Any]) -> None:
    assert cpu_signature(case["family"], case["model"], case["stepping"]) == int(case["expected"], 16)


def test_vcpu_type_table() -> None:
    assert {k: hex(v) for k, v in VCPU_SIGNATURES.items()} == SNP["cpu_sigs"]
    for name, sig in SNP["cpu_sigs"].items():
        assert parse_vcpu(name) == int(sig, 16)
        assert parse_vcpu(sig) == int(sig, 16)
    assert parse_vcpu("0") == 0  # upstream test_get_vcpu_sig_zero (fixed after 0.0.13)
    with pytest.raises(UnsupportedInputError, match="unknown vCPU type"):
        parse_vcpu("EPYC-Bogus")


def test_gce_ignores_signature_but_qemu_needs_one() -> None:
    fw = parse_firmware((MEASURE / "snp/ssm-fixtures/ovmf_AmdSev_suffix.bin").read_bytes())
    assert snp_launch_digest(fw, 2, None, 1, vmm=VmmType.GCE) == snp_launch_digest(
        fw, 2, 0xA00F11, 1, vmm=VmmType.GCE
    )
    with pytest.raises(UnsupportedInputError, match="vCPU type or signature"):
        snp_launch_digest(fw, 1, None, 1)


@pytest.mark.parametrize(
    "case", SNP["external_firmware_cases"], ids=[c["id"] for c in SNP["external_firmware_cases"]]
)
def test_debian_ovmf(case: dict[str, Any]) -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip("Debian package ovmf not installed (.ci/apt/measure.txt installs it)")
    data = DEBIAN_OVMF.read_bytes()
    if hashlib.sha256(data).hexdigest() != DEBIAN_OVMF_SHA256:
        pytest.skip(
            "installed OVMF.fd is not ovmf 2022.11-6+deb12u2, the version the vectors were taken from"
        )
    assert measure_case(case, data).hex() == case["expected"]


# --- the synthetic firmwares are rebuilt from the generator description, byte for byte ---


def _fill(kind: str, size: int) -> bytes:
    if kind == "zero":
        return bytes(size)
    return bytes((7 * j + 61 * (j // 4096) + 3) % 256 for j in range(size))


def _entry_data(text: str) -> bytes:
    values = [int(part.strip().split()[1], 16) for part in text.split("(")[0].split(",")]
    return b"".join(struct.pack("<I", v) for v in values)


def build_synthetic(spec: dict[str, Any]) -> bytes:
    size = spec["size"]
    data = bytearray(_fill("zero" if spec["base_fill"] == "all zero" else "pattern", size))
    meta_at = int(spec["meta_offset"], 16)
    sections = [
        (int(g, 16), int(s, 16), t if isinstance(t, int) else int(t, 16)) for g, s, t in spec["sections"]
    ]
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    meta += b"".join(struct.pack("<III", *s) for s in sections)
    data[meta_at : meta_at + len(meta)] = meta
    table = b""
    for guid, text in spec["table_entries"]:
        payload = _entry_data(text)
        table += payload + struct.pack("<H", len(payload) + 18) + uuid.UUID(guid).bytes_le
    table += struct.pack("<H", len(table) + 18) + uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    data[size - 32 - len(table) : size - 32] = table
    return bytes(data)


@pytest.mark.parametrize("name", ["S8K", "SYN-A", "SYN-B"])
def test_synthetic_firmware_generator(name: str) -> None:
    spec = index()["synthetic_generators"][name]
    assert build_synthetic(spec) == (MEASURE / spec["file"]).read_bytes()


def test_synthetic_boot_files() -> None:
    gen = index()["synthetic_generators"]
    assert (
        bytes((13 * j + 5) % 256 for j in range(gen["K1"]["size"]))
        == (MEASURE / gen["K1"]["file"]).read_bytes()
    )
    assert (
        bytes(255 - (j % 251) for j in range(gen["I1"]["size"])) == (MEASURE / gen["I1"]["file"]).read_bytes()
    )


def test_fixture_files_match_index() -> None:
    for f in index()["files"]:
        path = MEASURE / f["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], f["path"]


def test_ovmf_hash_roundtrip_matches_full_measurement() -> None:
    fw = parse_firmware((MEASURE / "synthetic/fw_syn_a.bin").read_bytes())
    boot = BootHashes.of(b"kernel", b"initrd", "root=/dev/vda")
    seed = ovmf_pages_digest(fw)
    for vcpus in (1, 3):
        assert snp_launch_digest(fw, vcpus, 0xA10F10, 0x1, boot, ovmf_hash=seed) == snp_launch_digest(
            fw, vcpus, 0xA10F10, 0x1, boot
        )


def test_errors_are_measure_errors() -> None:
    fw = parse_firmware((MEASURE / "synthetic/fw_syn_a.bin").read_bytes())
    for bad in (0, 5000):
        with pytest.raises(MeasureError):
            snp_launch_digest(fw, bad, 0xA00F11)


def _with_hash_entry(gpa: int, size: int) -> bytes:
    """S8K with its SEV hash-table entry (GPA, size) rewritten."""
    data = bytearray((MEASURE / "synthetic/fw_s8k.bin").read_bytes())
    table_end = len(data) - 32 - 18 - 22  # footer, then the metadata entry before it
    entry_data_at = table_end - 26
    struct.pack_into("<II", data, entry_data_at, gpa, size)
    return bytes(data)


@pytest.mark.parametrize(
    ("gpa", "size", "message"),
    [
        (0x804C00, 0x400, "outside every SNP_KERNEL_HASHES page"),
        (0x803C00, 0x10, "smaller than the 176-byte"),
    ],
)
def test_hash_table_area_checked(gpa: int, size: int, message: str) -> None:
    fw = parse_firmware(_with_hash_entry(gpa, size))
    assert fw.hash_table_area is not None and fw.hash_table_area.gpa == gpa
    boot = BootHashes.of(b"kernel")
    with pytest.raises(UnsupportedInputError, match=message):
        snp_launch_digest(fw, 1, 0xA00F11, 0x1, boot)
    assert len(snp_launch_digest(fw, 1, 0xA00F11, 0x1)) == 48  # no kernel: the area is not used
    if size < 176:
        with pytest.raises(UnsupportedInputError, match=message):
            sev_digest(fw, boot)


def test_ap_reset_address_zero_only_matters_with_aps() -> None:
    data = bytearray((MEASURE / "synthetic/fw_s8k.bin").read_bytes())
    table_end = len(data) - 32 - 18 - 22 - 26
    struct.pack_into("<I", data, table_end - 22, 0)
    fw = parse_firmware(bytes(data))
    assert fw.sev_es_reset_eip == 0
    assert len(snp_launch_digest(fw, 1, 0xA00F11)) == 48
    with pytest.raises(UnsupportedInputError, match="AP reset address 0"):
        snp_launch_digest(fw, 2, 0xA00F11)
