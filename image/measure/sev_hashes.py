"""The SEV hashes table QEMU writes for direct kernel boot (``kernel-hashes=on``).

OVMF's AmdSev build checks the kernel, initrd and command line it loads from fw_cfg against this
table, and the table page is part of the launch measurement, so measuring the table measures the
boot inputs. Layout (OVMF's SEV hash table): header GUID + u16 length 168, then cmdline, initrd and
kernel entries (GUID, u16 length 50, SHA-256), zero-padded to 176 bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from image.measure.errors import UnsupportedInputError
from image.measure.guid import guid_le

__all__ = ["HASHES_TABLE_SIZE", "BootHashes"]

_TABLE_GUID: Final = guid_le("9438d606-4f22-4cc9-b479-a793d411fd21")
_CMDLINE_GUID: Final = guid_le("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
_INITRD_GUID: Final = guid_le("44baf731-3a2f-4bd7-9af1-41e29169781d")
_KERNEL_GUID: Final = guid_le("4de79437-abd2-427f-b835-d5b172d2045b")
_ENTRY_SIZE: Final = 16 + 2 + 32
_TABLE_LEN: Final = 16 + 2 + 3 * _ENTRY_SIZE  # 168
HASHES_TABLE_SIZE: Final = (_TABLE_LEN + 15) // 16 * 16  # 176: QEMU pads to 16 bytes
PAGE_SIZE: Final = 0x1000


@dataclass(frozen=True, slots=True)
class BootHashes:
    """SHA-256 digests of the kernel, initrd and command line as QEMU computes them."""

    kernel: bytes
    initrd: bytes
    cmdline: bytes

    @classmethod
    def of(cls, kernel: bytes, initrd: bytes | None = None, append: str | None = None) -> BootHashes:
        """Hash the boot inputs: no initrd hashes as empty; the command line is UTF-8 plus one NUL."""
        cmdline = (append or "").encode() + b"\0"
        return cls(
            kernel=hashlib.sha256(kernel).digest(),
            initrd=hashlib.sha256(initrd or b"").digest(),
            cmdline=hashlib.sha256(cmdline).digest(),
        )

    def table(self) -> bytes:
        out = bytearray(_TABLE_GUID + struct.pack("<H", _TABLE_LEN))
        for guid, digest in ((_CMDLINE_GUID, self.cmdline), (_INITRD_GUID, self.initrd),
                             (_KERNEL_GUID, self.kernel)):
            out += guid + struct.pack("<H", _ENTRY_SIZE) + digest
        out += bytes(HASHES_TABLE_SIZE - len(out))
        return bytes(out)

    def page(self, offset: int) -> bytes:
        """A zero page with the table at ``offset`` (the table GPA's offset within its page)."""
        if not 0 <= offset <= PAGE_SIZE - HASHES_TABLE_SIZE:
            raise UnsupportedInputError(
                f"SEV hashes table at page offset 0x{offset:x} does not fit in the page "
                f"(needs {HASHES_TABLE_SIZE} bytes)"
            )
        return bytes(offset) + self.table() + bytes(PAGE_SIZE - offset - HASHES_TABLE_SIZE)
