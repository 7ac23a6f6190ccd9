"""The SNP launch-digest update (SNP ABI ``PAGE_INFO``), the primitive every SNP measurement uses.

Each ``SNP_LAUNCH_UPDATE`` of one 4 KiB page replaces the 48-byte digest LD by
``SHA-384(PAGE_INFO)``, where PAGE_INFO (0x70 bytes) is: LD, CONTENTS (SHA-384 of the page for
NORMAL and VMSA pages, zeros otherwise), u16 length 0x70, u8 page type, u8 IMI page, three u8 VMPL
permissions, u8 reserved, u64 GPA (SEV-SNP ABI, PAGE_INFO).

The state is an immutable value so a partially measured prefix (the OVMF pages, or the whole
1-vCPU launch) can be kept and extended many times without re-hashing the firmware.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from image.measure.errors import UnsupportedInputError

__all__ = ["DIGEST_SIZE", "VMSA_GPA", "LaunchDigest", "PageType"]

DIGEST_SIZE: Final = 48
PAGE_SIZE: Final = 0x1000
# The RMP records the VMSA at GPA -1; the measured value is that page-aligned with bits above 51 cleared.
VMSA_GPA: Final = 0xFFFFFFFFF000
_PAGE_INFO_TAIL = struct.Struct("<HBBBBBBQ")
_PAGE_INFO_LEN: Final = 0x70
_ZERO_CONTENTS: Final = bytes(DIGEST_SIZE)


class PageType(enum.IntEnum):
    NORMAL = 1
    VMSA = 2
    ZERO = 3
    UNMEASURED = 4
    SECRETS = 5
    CPUID = 6


@dataclass(frozen=True, slots=True)
class LaunchDigest:
    """A launch digest value; every ``update_*`` returns a new value."""

    value: bytes = bytes(DIGEST_SIZE)

    def __post_init__(self) -> None:
        if len(self.value) != DIGEST_SIZE:
            raise UnsupportedInputError(f"launch digest must be {DIGEST_SIZE} bytes, got {len(self.value)}")

    def hex(self) -> str:
        return self.value.hex()

    def update(self, page_type: PageType, gpa: int, contents: bytes = _ZERO_CONTENTS) -> LaunchDigest:
        return LaunchDigest(_step(self.value, page_type, gpa, contents))

    def update_normal_pages(self, gpa: int, data: bytes | memoryview) -> LaunchDigest:
        """Measure ``data`` (a page multiple) as NORMAL pages starting at ``gpa``."""
        if len(data) % PAGE_SIZE:
            raise UnsupportedInputError(f"measured data must be a page multiple, got {len(data)} bytes")
        view = memoryview(data)
        ld = self.value
        sha384 = hashlib.sha384
        for offset in range(0, len(view), PAGE_SIZE):
            page_hash = sha384(view[offset:offset + PAGE_SIZE]).digest()
            ld = _step(ld, PageType.NORMAL, gpa + offset, page_hash)
        return LaunchDigest(ld)

    def update_empty_pages(self, page_type: PageType, gpa: int, length: int) -> LaunchDigest:
        """Measure ``length`` bytes of ZERO / UNMEASURED pages (contents field all zero)."""
        ld = self.value
        for offset in range(0, length, PAGE_SIZE):
            ld = _step(ld, page_type, gpa + offset, _ZERO_CONTENTS)
        return LaunchDigest(ld)

    def update_vmsa_page(self, page: bytes) -> LaunchDigest:
        return LaunchDigest(_step(self.value, PageType.VMSA, VMSA_GPA, hashlib.sha384(page).digest()))


def _step(ld: bytes, page_type: int, gpa: int, contents: bytes) -> bytes:
    tail = _PAGE_INFO_TAIL.pack(_PAGE_INFO_LEN, page_type, 0, 0, 0, 0, 0, gpa)
    return hashlib.sha384(ld + contents + tail).digest()
