"""Property tests against the sev-snp-measure package (PyPI 0.0.13), used only as a test oracle.

Random synthetic firmwares (GUID table + ASEV metadata over random page contents), random kernels,
initrds, command lines (including non-ASCII), vCPU counts and types, guest features, VMM types and
modes: our digest must equal the oracle's, and where the oracle refuses we must refuse too.
"""

from __future__ import annotations

import os
import struct
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from image.measure import BootHashes, MeasureError, VmmType, parse_firmware
from image.measure.digest import LaunchDigest
from image.measure.snp import ovmf_pages_digest, sev_digest, seves_digest, snp_launch_digest
from image.measure.vmsa import VCPU_SIGNATURES
from tests.measure.vectors import DEBIAN_OVMF

guest = pytest.importorskip(
    "sevsnpmeasure.guest", reason="oracle sev-snp-measure==0.0.13 not installed (pip install it into .venv)"
)
from sevsnpmeasure.sev_mode import SevMode  # noqa: E402
from sevsnpmeasure.vmm_types import VMMType  # noqa: E402

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
RESET_GUID = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
HASH_GUID = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
META_GUID = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc")


@dataclass
class SyntheticFirmware:
    data: bytes
    has_kernel_hashes: bool


@st.composite
def firmwares(draw: st.DrawFn) -> SyntheticFirmware:
    pages = draw(st.integers(2, 6))
    size = pages * 4096
    seed = draw(st.integers(0, 255))
    data = bytearray((seed + 31 * j + (j >> 12)) % 256 for j in range(size))
    kinds = draw(st.lists(st.sampled_from([1, 2, 3, 4, 0x10]), min_size=0, max_size=6))
    if draw(st.booleans()) and 0x10 not in kinds:
        kinds.append(0x10)
    gpa = 0x800000
    sections = []
    hash_gpa = 0
    for kind in kinds:
        length = 0x1000 if kind in (2, 3, 0x10) else 0x1000 * draw(st.integers(1, 3))
        if kind == 0x10:
            hash_gpa = gpa + draw(st.integers(0, (0x1000 - 176) // 16)) * 16
        sections.append((gpa, length, kind))
        gpa += length
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    meta += b"".join(struct.pack("<III", *s) for s in sections)
    data[0x100 : 0x100 + len(meta)] = meta
    reset_eip = draw(st.integers(0x10000, 0xFFFFFFFF))
    entries = [
        (RESET_GUID, struct.pack("<I", reset_eip)),
        (HASH_GUID, struct.pack("<II", hash_gpa, 0x400 if hash_gpa else 0)),
        (META_GUID, struct.pack("<I", size - 0x100)),
    ]
    entries = draw(st.permutations(entries))
    table = b"".join(d + struct.pack("<H", len(d) + 18) + g.bytes_le for g, d in entries)
    table += struct.pack("<H", len(table) + 18) + FOOTER_GUID.bytes_le
    data[size - 32 - len(table) : size - 32] = table
    return SyntheticFirmware(bytes(data), 0x10 in kinds)


cmdlines = st.one_of(
    st.none(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
)


@settings(
    max_examples=int(os.environ.get("MEASURE_ORACLE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    fw=firmwares(),
    mode=st.sampled_from(["snp", "seves", "sev"]),
    vmm=st.sampled_from(list(VmmType)),
    vcpus=st.integers(1, 8),
    vcpu_type=st.sampled_from(sorted(VCPU_SIGNATURES)),
    features=st.sampled_from([0x1, 0x21, 0x0, 0x5]),
    kernel=st.one_of(st.none(), st.binary(max_size=3000)),
    initrd=st.one_of(st.none(), st.binary(max_size=3000)),
    append=cmdlines,
)
def test_matches_oracle(
    fw: SyntheticFirmware,
    mode: str,
    vmm: VmmType,
    vcpus: int,
    vcpu_type: str,
    features: int,
    kernel: bytes | None,
    initrd: bytes | None,
    append: str | None,
) -> None:
    if mode != "snp":
        vmm = VmmType.QEMU  # the oracle's sev/seves ignore the VMM type for everything but VMSAs
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "fw").write_bytes(fw.data)
        kpath = ipath = ""
        if kernel is not None:
            (d / "k").write_bytes(kernel)
            kpath = str(d / "k")
            if initrd is not None:
                (d / "i").write_bytes(initrd)
                ipath = str(d / "i")
        sig = VCPU_SIGNATURES[vcpu_type]
        oracle_mode = {"snp": SevMode.SEV_SNP, "seves": SevMode.SEV_ES, "sev": SevMode.SEV}[mode]
        try:
            want: bytes | None = guest.calc_launch_digest(
                oracle_mode,
                vcpus,
                sig,
                str(d / "fw"),
                kpath,
                ipath,
                append or "",
                features,
                vmm_type=VMMType[vmm.value if vmm is not VmmType.QEMU else "QEMU"],
            )
        except (RuntimeError, AssertionError, ValueError):
            want = None
    boot = (
        BootHashes.of(kernel, initrd if kernel is not None else None, append) if kernel is not None else None
    )
    parsed = parse_firmware(fw.data)
    try:
        if mode == "snp":
            got: bytes | None = snp_launch_digest(parsed, vcpus, sig, features, boot, vmm)
        elif mode == "seves":
            got = seves_digest(parsed, vcpus, sig, boot, vmm)
        else:
            got = sev_digest(parsed, boot)
    except MeasureError:
        got = None
    assert got == want


@settings(max_examples=15, deadline=None)
@given(fw=firmwares())
def test_ovmf_hash_matches_oracle(fw: SyntheticFirmware) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(fw.data)
        f.flush()
        want = guest.calc_snp_ovmf_hash(f.name)
    assert ovmf_pages_digest(parse_firmware(fw.data)).value == want


@pytest.mark.parametrize("vcpus", [1, 3, 8])
@pytest.mark.parametrize("vcpu_type", ["EPYC-Milan", "EPYC-Genoa", "EPYC-Turin"])
def test_debian_ovmf_matches_oracle(vcpus: int, vcpu_type: str) -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip("Debian package ovmf not installed (.ci/apt/measure.txt installs it)")
    seed = bytes.fromhex(guest.calc_snp_ovmf_hash(str(DEBIAN_OVMF)).hex())
    sig = VCPU_SIGNATURES[vcpu_type]
    want = guest.calc_launch_digest(
        SevMode.SEV_SNP, vcpus, sig, str(DEBIAN_OVMF), "", "", "", 0x1, snp_ovmf_hash_str=seed.hex()
    )
    fw = parse_firmware(DEBIAN_OVMF.read_bytes())
    assert snp_launch_digest(fw, vcpus, sig, 0x1, ovmf_hash=LaunchDigest(seed)) == want
    assert snp_launch_digest(fw, vcpus, sig, 0x1) == want
