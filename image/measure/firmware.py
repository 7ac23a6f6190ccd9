"""Strict parser for the OVMF GUIDed footer table and the SEV metadata it points to.

OVMF (and Coconut-SVSM, and TDVF) images end with a table of ``[data][u16 length][GUID]`` entries
that is walked backwards from a footer entry sitting 32 bytes before the end of the file. The SEV
entries give the AP reset address, where QEMU writes the kernel hashes table and where the ``ASEV``
metadata lists the pages the launch measures.

The firmware file is attacker-controllable input for a verifier that measures what a host hands it,
so every length and offset is checked before it is used; a malformed image raises
:class:`FirmwareError` naming the field, and nothing else. Layout: OVMF's GUIDed footer table at
the end of the image.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from image.measure.errors import FirmwareError
from image.measure.guid import guid_str

__all__ = [
    "FOUR_GIB",
    "PAGE_SIZE",
    "Firmware",
    "HashTableArea",
    "SectionType",
    "SevSection",
    "parse_firmware",
]

PAGE_SIZE: Final = 0x1000
FOUR_GIB: Final = 0x1_0000_0000

# Bytes after the table that are not part of it (the reset vector area).
_TRAILER_SIZE: Final = 32
# Every table entry ends with u16 length + 16-byte GUID.
_ENTRY_HEADER_SIZE: Final = 18

FOOTER_GUID: Final = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_ES_RESET_BLOCK_GUID: Final = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
SEV_HASH_TABLE_GUID: Final = "7255371f-3a3b-4b04-927b-1da6efa8d454"
SEV_METADATA_GUID: Final = "dc886566-984a-4798-a75e-5585a7bf67cc"
TDX_METADATA_GUID: Final = "e47a6535-984a-4798-865e-4685a7bf8ec2"
SVSM_INFO_GUID: Final = "a789a612-0597-4c4b-a49f-cbb1fe9d1ddd"

_SEV_META_HEADER = struct.Struct("<4sIII")  # signature, size, version, item count
_SEV_META_ITEM = struct.Struct("<III")  # gpa, size, type
# Far above any real firmware's section count; bounds the work a hostile header can cause.
MAX_SEV_SECTIONS: Final = 256


class SectionType(enum.IntEnum):
    """SEV metadata section types (OvmfPkg ``SEV_METADATA_SECTION_TYPE``)."""

    SNP_SEC_MEM = 1
    SNP_SECRETS = 2
    CPUID = 3
    SVSM_CAA = 4
    SNP_KERNEL_HASHES = 0x10


@dataclass(frozen=True, slots=True)
class SevSection:
    """One ``ASEV`` item: a page-aligned guest-physical range and what the launch does with it."""

    gpa: int
    size: int
    type: SectionType


@dataclass(frozen=True, slots=True)
class HashTableArea:
    """Where QEMU writes the SEV kernel/initrd/cmdline hashes table (GPA 0 means unsupported)."""

    gpa: int
    size: int


@dataclass(frozen=True, slots=True)
class Firmware:
    """A parsed firmware image mapped so that it ends at ``end_gpa`` (4 GiB for OVMF)."""

    data: bytes
    gpa: int
    table: MappingProxyType[str, bytes]
    sev_sections: tuple[SevSection, ...]

    @property
    def size(self) -> int:
        return len(self.data)

    def has_section(self, section_type: SectionType) -> bool:
        return any(s.type == section_type for s in self.sev_sections)

    def _u32_entry(self, guid: str, what: str, index: int = 0) -> int | None:
        entry = self.table.get(guid)
        if entry is None:
            return None
        end = 4 * (index + 1)
        if len(entry) < end:
            raise FirmwareError(f"{what} table entry", None, f"at least {end} data bytes", f"{len(entry)}")
        value: int = struct.unpack_from("<I", entry, 4 * index)[0]
        return value

    @property
    def sev_es_reset_eip(self) -> int | None:
        """AP reset address from the SEV-ES reset block, or ``None`` if the entry is absent."""
        return self._u32_entry(SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")

    @property
    def hash_table_area(self) -> HashTableArea | None:
        gpa = self._u32_entry(SEV_HASH_TABLE_GUID, "SEV hash table")
        if gpa is None:
            return None
        size = self._u32_entry(SEV_HASH_TABLE_GUID, "SEV hash table", 1)
        assert size is not None  # the entry exists, so index 1 was checked
        return HashTableArea(gpa, size)

    @property
    def supports_kernel_hashes(self) -> bool:
        """True when QEMU can write the hashes table (SEV/SEV-ES rule: entry present, GPA non-zero)."""
        area = self.hash_table_area
        return area is not None and area.gpa != 0

    @property
    def tdx_metadata_offset(self) -> int | None:
        return self._u32_entry(TDX_METADATA_GUID, "TDX metadata")

    @property
    def svsm_info_offset(self) -> int | None:
        return self._u32_entry(SVSM_INFO_GUID, "SVSM info")


def parse_guid_table(data: bytes) -> dict[str, bytes]:
    """Walk the GUIDed footer table; an image without the footer GUID has an empty table."""
    size = len(data)
    footer_at = size - _TRAILER_SIZE - _ENTRY_HEADER_SIZE
    if footer_at < 0:
        raise FirmwareError("size", None, f"at least {_TRAILER_SIZE + _ENTRY_HEADER_SIZE} bytes", str(size))
    total_len, guid_bytes = struct.unpack_from("<H16s", data, footer_at)
    if guid_str(guid_bytes) != FOOTER_GUID:
        return {}
    if total_len < _ENTRY_HEADER_SIZE or total_len - _ENTRY_HEADER_SIZE > footer_at:
        raise FirmwareError(
            "GUID table length", footer_at,
            f"{_ENTRY_HEADER_SIZE}..{footer_at + _ENTRY_HEADER_SIZE}", str(total_len),
        )
    start = footer_at - (total_len - _ENTRY_HEADER_SIZE)
    table: dict[str, bytes] = {}
    end = footer_at  # entries occupy data[start:end], walked from the end
    while end > start:
        header_at = end - _ENTRY_HEADER_SIZE
        if header_at < start:
            raise FirmwareError("GUID table entry", start, "a complete 18-byte entry header",
                                f"{end - start} leftover bytes")
        entry_len, guid_bytes = struct.unpack_from("<H16s", data, header_at)
        if entry_len < _ENTRY_HEADER_SIZE or entry_len > end - start:
            raise FirmwareError("GUID table entry length", header_at,
                                f"{_ENTRY_HEADER_SIZE}..{end - start}", str(entry_len))
        guid = guid_str(guid_bytes)
        if guid in table:
            raise FirmwareError("GUID table entry", header_at, "each GUID once", f"{guid} twice")
        table[guid] = bytes(data[end - entry_len:header_at])
        end -= entry_len
    return table


def _parse_sev_metadata(data: bytes, offset_from_end: int) -> tuple[SevSection, ...]:
    size = len(data)
    if offset_from_end < _SEV_META_HEADER.size or offset_from_end > size:
        raise FirmwareError("SEV metadata offset", None, f"{_SEV_META_HEADER.size}..{size}",
                            str(offset_from_end))
    at = size - offset_from_end
    signature, total, version, count = _SEV_META_HEADER.unpack_from(data, at)
    if signature != b"ASEV":
        raise FirmwareError("SEV metadata signature", at, "b'ASEV'", repr(signature))
    if version != 1:
        raise FirmwareError("SEV metadata version", at + 8, "1", str(version))
    if count > MAX_SEV_SECTIONS:
        raise FirmwareError("SEV metadata item count", at + 12, f"<= {MAX_SEV_SECTIONS}", str(count))
    want = _SEV_META_HEADER.size + _SEV_META_ITEM.size * count
    if total != want:
        raise FirmwareError("SEV metadata size", at + 4, f"{want} (16 + 12 * {count})", str(total))
    if at + total > size:
        raise FirmwareError("SEV metadata size", at + 4, f"<= {size - at} (end of file)", str(total))
    sections = []
    for i in range(count):
        item_at = at + _SEV_META_HEADER.size + i * _SEV_META_ITEM.size
        gpa, length, raw_type = _SEV_META_ITEM.unpack_from(data, item_at)
        try:
            section_type = SectionType(raw_type)
        except ValueError:
            raise FirmwareError("SEV metadata section type", item_at + 8,
                                "one of 1, 2, 3, 4, 0x10", hex(raw_type)) from None
        if gpa % PAGE_SIZE:
            raise FirmwareError("SEV metadata section GPA", item_at, "page aligned", hex(gpa))
        if length == 0 or length % PAGE_SIZE:
            raise FirmwareError("SEV metadata section size", item_at + 4, "a non-zero page multiple",
                                hex(length))
        sections.append(SevSection(gpa, length, section_type))
    return tuple(sections)


def parse_firmware(data: bytes, end_gpa: int = FOUR_GIB) -> Firmware:
    """Parse ``data`` as a firmware volume mapped to end at ``end_gpa``.

    The image must be a non-empty page multiple that fits below ``end_gpa`` (QEMU maps ``-bios`` images
    that way); the GUID table and the SEV metadata, when present, must be well formed.
    """
    data = bytes(data)
    size = len(data)
    if size == 0 or size % PAGE_SIZE:
        raise FirmwareError("size", None, "a non-zero multiple of 4096 bytes", str(size))
    if size > end_gpa:
        raise FirmwareError("size", None, f"<= 0x{end_gpa:x} (end GPA)", hex(size))
    table = parse_guid_table(data)
    sections: tuple[SevSection, ...] = ()
    meta = table.get(SEV_METADATA_GUID)
    if meta is not None:
        if len(meta) < 4:
            raise FirmwareError("SEV metadata table entry", None, "at least 4 data bytes", str(len(meta)))
        sections = _parse_sev_metadata(data, struct.unpack_from("<I", meta)[0])
    return Firmware(data=data, gpa=end_gpa - size, table=MappingProxyType(table), sev_sections=sections)
