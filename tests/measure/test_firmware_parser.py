"""The OVMF / TDVF parsers: one malformed field at a time, and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import contextlib
import struct
import uuid
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from image.measure import FirmwareError, MeasureError, parse_firmware
from image.measure.firmware import SEV_METADATA_GUID, SectionType
from image.measure.guid import guid_le
from image.measure.snp import snp_launch_digest
from image.measure.tdvf import PageOrder, mrtd, parse_tdvf
from tests.measure.vectors import MEASURE

S8K = (MEASURE / "synthetic/fw_s8k.bin").read_bytes()
META = 0x1000  # S8K's ASEV header offset
FOOTER = len(S8K) - 32 - 18  # S8K's footer entry


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    return bytes(out)


def test_s8k_parses() -> None:
    fw = parse_firmware(S8K)
    assert fw.gpa == 0x1_0000_0000 - 8192
    assert [s.type for s in fw.sev_sections] == [
        SectionType.SNP_SEC_MEM,
        SectionType.SNP_SECRETS,
        SectionType.CPUID,
        SectionType.SNP_KERNEL_HASHES,
    ]
    assert fw.sev_es_reset_eip == 0x80B004
    area = fw.hash_table_area
    assert area is not None and (area.gpa, area.size) == (0x803C00, 0x400)


# (name, mutation, expected field in the error) — like go-sev-guest's TestReportMbz table.
NEGATIVE: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda d: b"", "size"),
    ("not a page multiple", lambda d: d + b"\0", "size"),
    ("metadata signature", lambda d: _patch(d, META, b"XSEV"), "SEV metadata signature"),
    ("metadata version", lambda d: _patch(d, META + 8, struct.pack("<I", 2)), "SEV metadata version"),
    ("metadata size", lambda d: _patch(d, META + 4, struct.pack("<I", 65)), "SEV metadata size"),
    (
        "metadata count huge",
        lambda d: _patch(d, META + 12, struct.pack("<I", 10**6)),
        "SEV metadata item count",
    ),
    ("section type", lambda d: _patch(d, META + 16 + 8, struct.pack("<I", 7)), "SEV metadata section type"),
    (
        "section GPA unaligned",
        lambda d: _patch(d, META + 16, struct.pack("<I", 0x800001)),
        "SEV metadata section GPA",
    ),
    (
        "section size zero",
        lambda d: _patch(d, META + 16 + 4, struct.pack("<I", 0)),
        "SEV metadata section size",
    ),
    ("footer length too small", lambda d: _patch(d, FOOTER, struct.pack("<H", 3)), "GUID table length"),
    ("footer length too large", lambda d: _patch(d, FOOTER, struct.pack("<H", 0xFFFF)), "GUID table length"),
    (
        "entry length too small",
        lambda d: _patch(d, FOOTER - 18, struct.pack("<H", 2)),
        "GUID table entry length",
    ),
    ("leftover bytes", lambda d: _patch(d, FOOTER, struct.pack("<H", 88 + 5)), "GUID table entry"),
    (
        "metadata offset out of file",
        lambda d: _patch(d, FOOTER - 22, struct.pack("<I", 0x10000)),
        "SEV metadata offset",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "field"), NEGATIVE, ids=[n for n, _, _ in NEGATIVE])
def test_malformed_field(name: str, mutate: Callable[[bytes], bytes], field: str) -> None:
    with pytest.raises(FirmwareError) as info:
        parse_firmware(mutate(S8K))
    assert info.value.field == field, str(info.value)
    assert field in str(info.value)


def test_duplicate_guid_rejected() -> None:
    entry = struct.pack("<I", 0x1000) + struct.pack("<H", 22) + guid_le(SEV_METADATA_GUID)
    footer = struct.pack("<H", 2 * 22 + 18) + uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    table = entry + entry + footer
    data = _patch(bytes(8192), 8192 - 32 - len(table), table)
    with pytest.raises(FirmwareError, match="twice"):
        parse_firmware(data)


def test_no_footer_means_no_table() -> None:
    fw = parse_firmware(bytes(4096))
    assert dict(fw.table) == {} and fw.sev_sections == ()
    with pytest.raises(MeasureError, match="reset block"):
        snp_launch_digest(fw, 1, 0xA00F11)


def test_tdvf_absent_is_an_error() -> None:
    with pytest.raises(FirmwareError, match="TDX metadata"):
        parse_tdvf(parse_firmware(S8K))


def _fuzz_target(data: bytes) -> None:
    """Arbitrary bytes give a result or our typed error, nothing else."""
    try:
        fw = parse_firmware(data)
    except FirmwareError:
        return
    for call in (
        lambda: snp_launch_digest(fw, 2, 0xA00F11, 1),
        lambda: mrtd(fw, PageOrder.SINGLE_PASS),
    ):
        with contextlib.suppress(MeasureError):
            call()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=9000))
def test_arbitrary_bytes(data: bytes) -> None:
    _fuzz_target(data)


@st.composite
def mutated_s8k(draw: st.DrawFn) -> bytes:
    """S8K with a few bytes overwritten inside its metadata or its GUID table, where parsing happens."""
    data = bytearray(S8K)
    for _ in range(draw(st.integers(1, 6))):
        region = draw(st.sampled_from([(META, META + 64), (len(S8K) - 32 - 88, len(S8K) - 32)]))
        at = draw(st.integers(*region))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated_s8k())
def test_mutated_firmware(data: bytes) -> None:
    _fuzz_target(data)


@st.composite
def tdvf_firmware(draw: st.DrawFn) -> bytes:
    """A 8 KiB image whose TDVF descriptor holds random sections."""
    size = 8192
    count = draw(st.integers(0, 4))
    sections = b""
    for _ in range(count):
        sections += struct.pack(
            "<IIQQII",
            draw(st.integers(0, 0x3000)),
            draw(st.sampled_from([0, 0x1000, 0x2000, 0x123])),
            draw(st.sampled_from([0xFFFFE000, 0x800000, 0x800001])),
            draw(st.sampled_from([0x1000, 0x2000, 0])),
            draw(st.integers(0, 8)),
            draw(st.integers(0, 4)),
        )
    desc = b"TDVF" + struct.pack("<III", 16 + len(sections), 1, count) + sections
    tdx_guid = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2")
    entry = struct.pack("<I", size - 0x100) + struct.pack("<H", 22) + tdx_guid.bytes_le
    footer = struct.pack("<H", 22 + 18) + uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    data = _patch(bytes(size), 0x100, desc)
    return _patch(data, size - 32 - 40, entry + footer)


@settings(max_examples=300, deadline=None)
@given(tdvf_firmware(), st.sampled_from(list(PageOrder)))
def test_tdvf_random_sections(data: bytes, order: PageOrder) -> None:
    fw = parse_firmware(data)
    try:
        digest = mrtd(fw, order)
    except FirmwareError:
        return
    assert len(digest) == 48
