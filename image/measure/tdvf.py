"""TDVF metadata and the MRTD a TDX module computes while the VMM adds the firmware pages.

The GUID table entry ``e47a6535-…`` gives the offset (from the end of the file) of a ``TDVF``
descriptor: u32 length, u32 version 1, u32 section count, then 32-byte sections (u32 data offset,
u32 raw size, u64 GPA, u64 memory size, u32 type, u32 attributes), as in Intel's TDVF design guide.

MRTD is SHA-384 over one byte stream: for every page of every section without PAGE.AUG a 128-byte
``MEM.PAGE.ADD`` record, and for every 256-byte chunk of a section with MR.EXTEND a 128-byte
``MR.EXTEND`` record followed by the chunk. Hosts differ in the order: QEMU 8.x (and Contrast's
tdx-measure) add all pages of a section before extending it (:attr:`PageOrder.TWO_PASS`); QEMU >= 9
adds and extends page by page (:attr:`PageOrder.SINGLE_PASS`). The caller picks the order of the host
it predicts for.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from image.measure.errors import FirmwareError
from image.measure.firmware import Firmware

__all__ = ["PageOrder", "TdvfSection", "TdvfSectionType", "mrtd", "parse_tdvf"]

PAGE_SIZE: Final = 0x1000
_CHUNK: Final = 0x100
_HEADER = struct.Struct("<4sIII")
_SECTION = struct.Struct("<IIQQII")
MAX_TDVF_SECTIONS: Final = 256
ATTR_MR_EXTEND: Final = 0x1
ATTR_PAGE_AUG: Final = 0x2


class TdvfSectionType(enum.IntEnum):
    BFV = 0
    CFV = 1
    TD_HOB = 2
    TEMP_MEM = 3
    PERM_MEM = 4
    PAYLOAD = 5
    PAYLOAD_PARAM = 6


class PageOrder(enum.Enum):
    TWO_PASS = "two-pass"  # noqa: S105 - per section: all PAGE.ADD, then all MR.EXTEND (QEMU 8.x, Contrast)
    SINGLE_PASS = "single-pass"  # noqa: S105 - per page: PAGE.ADD then its 16 MR.EXTEND (QEMU >= 9)


@dataclass(frozen=True, slots=True)
class TdvfSection:
    data_offset: int
    raw_size: int
    gpa: int
    memory_size: int
    type: TdvfSectionType
    attributes: int

    @property
    def extends(self) -> bool:
        return bool(self.attributes & ATTR_MR_EXTEND)

    @property
    def page_aug(self) -> bool:
        return bool(self.attributes & ATTR_PAGE_AUG)


def parse_tdvf(fw: Firmware) -> tuple[TdvfSection, ...]:
    """The TDVF sections of ``fw``; a firmware without the TDX metadata entry is an error."""
    offset = fw.tdx_metadata_offset
    data = fw.data
    size = len(data)
    if offset is None:
        raise FirmwareError("TDX metadata table entry", None, "present (a TDX firmware)", "absent")
    if offset < _HEADER.size or offset > size:
        raise FirmwareError("TDX metadata offset", None, f"{_HEADER.size}..{size}", str(offset))
    at = size - offset
    signature, length, version, count = _HEADER.unpack_from(data, at)
    if signature != b"TDVF":
        raise FirmwareError("TDVF signature", at, "b'TDVF'", repr(signature))
    if version != 1:
        raise FirmwareError("TDVF version", at + 8, "1", str(version))
    if count == 0 or count > MAX_TDVF_SECTIONS:
        raise FirmwareError("TDVF section count", at + 12, f"1..{MAX_TDVF_SECTIONS}", str(count))
    want = _HEADER.size + _SECTION.size * count
    if length != want or at + length > size:
        raise FirmwareError("TDVF length", at + 4, f"{want} and within the file", str(length))
    sections = []
    for i in range(count):
        item = at + _HEADER.size + i * _SECTION.size
        data_offset, raw_size, gpa, mem_size, raw_type, attrs = _SECTION.unpack_from(data, item)
        try:
            kind = TdvfSectionType(raw_type)
        except ValueError:
            raise FirmwareError("TDVF section type", item + 24, "0..6", str(raw_type)) from None
        if attrs & ~(ATTR_MR_EXTEND | ATTR_PAGE_AUG):
            raise FirmwareError("TDVF section attributes", item + 28, "bits 0-1 only", hex(attrs))
        if gpa % PAGE_SIZE or mem_size % PAGE_SIZE or mem_size == 0:
            raise FirmwareError("TDVF section memory range", item + 8, "page aligned, non-empty",
                                f"GPA 0x{gpa:x} size 0x{mem_size:x}")
        if raw_size > mem_size or data_offset + raw_size > size:
            raise FirmwareError("TDVF section raw data", item, f"within the file and <= 0x{mem_size:x}",
                                f"offset 0x{data_offset:x} size 0x{raw_size:x}")
        if attrs & ATTR_MR_EXTEND and raw_size != mem_size:
            raise FirmwareError("TDVF MR.EXTEND section size", item + 4, f"raw size = 0x{mem_size:x}",
                                hex(raw_size))
        sections.append(TdvfSection(data_offset, raw_size, gpa, mem_size, kind, attrs))
    return tuple(sections)


def _record(name: bytes, gpa: int) -> bytes:
    return name.ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(128 - 24)


def mrtd(fw: Firmware, order: PageOrder = PageOrder.TWO_PASS) -> bytes:
    """MRTD after the VMM added (and extended) every TDVF section in table order."""
    h = hashlib.sha384()
    data = memoryview(fw.data)
    for s in parse_tdvf(fw):
        add = not s.page_aug
        pages = range(s.gpa, s.gpa + s.memory_size, PAGE_SIZE)
        if order is PageOrder.TWO_PASS or not s.extends:
            if add:
                for gpa in pages:
                    h.update(_record(b"MEM.PAGE.ADD", gpa))
            if s.extends:
                for off in range(0, s.raw_size, _CHUNK):
                    h.update(_record(b"MR.EXTEND", s.gpa + off))
                    h.update(data[s.data_offset + off:s.data_offset + off + _CHUNK])
        else:
            for gpa in pages:
                if add:
                    h.update(_record(b"MEM.PAGE.ADD", gpa))
                base = s.data_offset + (gpa - s.gpa)
                for off in range(0, PAGE_SIZE, _CHUNK):
                    h.update(_record(b"MR.EXTEND", gpa + off))
                    h.update(data[base + off:base + off + _CHUNK])
    return h.digest()
