"""RTMR predictions for a TDX guest booted by QEMU + TDVF with ``-kernel/-initrd/-append``.

What each register depends on (the event order is confirmed by the dstack event logs in the test
data, whose replay reproduces their quotes):

* RTMR0 - firmware and VMM configuration: the TD HOB (memory size, accepted ranges), the CFV
  (variable store), the Secure Boot variables, the three QEMU ACPI blobs (QEMU version, machine type,
  device topology, vCPU count), BootOrder/Boot0000. These are not derivable from the image, so RTMR0 is
  an *input*: replay it from an event log captured on the target host configuration
  (:func:`rtmr0_from_log`) or build it from the platform digests (:func:`rtmr0_events`).
* RTMR1 - the kernel's Authenticode SHA-384 as OVMF loads it, then fixed boot-manager strings and a
  separator. QEMU < 10 patches the bzImage setup header before handing it over fw_cfg; set
  ``qemu_patches_kernel`` to the QEMU in use (see :func:`qemu_patched_kernel`).
* RTMR2 - the command line the EFI stub sees (UTF-16LE, NUL-terminated; OVMF adds ``initrd=initrd``)
  and the initrd bytes.
* RTMR3 - zero at boot.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from image.measure.errors import UnsupportedInputError
from image.measure.eventlog import Event, replay, rtmr_extend
from image.measure.guid import guid_le

__all__ = [
    "InitrdArg",
    "TdxBootInputs",
    "authenticode_digest",
    "efi_stub_cmdline",
    "predict_rtmrs",
    "qemu_patched_kernel",
    "rtmr0_events",
    "rtmr0_from_digests",
    "rtmr0_from_log",
    "rtmr1",
    "rtmr2",
    "uefi_variable_data",
]

ZERO48: Final = bytes(48)
SEPARATOR: Final = hashlib.sha384(bytes(4)).digest()
_CALLING: Final = b"Calling EFI Application from Boot Option"
_EXIT_INVOCATION: Final = b"Exit Boot Services Invocation"
_EXIT_SUCCESS: Final = b"Exit Boot Services Returned with Success"
EFI_GLOBAL_VARIABLE: Final = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE: Final = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"


class InitrdArg(enum.Enum):
    PREPEND = "prepend"  # OVMF >= edk2-stable202308: "initrd=initrd <cmdline>"
    APPEND = "append"  # older OVMF: "<cmdline> initrd=initrd"
    NONE = "none"  # the firmware passes the command line unchanged


@dataclass(frozen=True, slots=True)
class TdxBootInputs:
    kernel: bytes
    initrd: bytes | None
    cmdline: str
    qemu_patches_kernel: bool = False  # True for QEMU < 10
    initrd_arg: InitrdArg = InitrdArg.PREPEND


# --- Authenticode (PE/COFF image hash, Microsoft PE Authenticode spec) ---

def authenticode_digest(pe: bytes, algorithm: str = "sha384") -> bytes:
    """Hash ``pe`` as Authenticode does: headers without CheckSum and the certificate-table entry,
    the sections in file-offset order, then any trailing data that is not the certificate table."""
    def u16(at: int) -> int:
        return int(struct.unpack_from("<H", pe, at)[0])

    def u32(at: int) -> int:
        return int(struct.unpack_from("<I", pe, at)[0])

    try:
        if pe[:2] != b"MZ":
            raise UnsupportedInputError("kernel is not a PE image (no MZ header): no EFI stub")
        pe_off = u32(0x3C)
        if pe[pe_off:pe_off + 4] != b"PE\0\0":
            raise UnsupportedInputError("kernel is not a PE image (no PE signature)")
        coff = pe_off + 4
        n_sections, opt_size = u16(coff + 2), u16(coff + 16)
        opt = coff + 20
        magic = u16(opt)
        if magic == 0x20B:
            dirs_at, n_dirs_at = opt + 112, opt + 108
        elif magic == 0x10B:
            dirs_at, n_dirs_at = opt + 96, opt + 92
        else:
            raise UnsupportedInputError(f"unknown PE optional header magic 0x{magic:x}")
        checksum_at = opt + 64
        size_of_headers = u32(opt + 60)
        n_dirs = u32(n_dirs_at)
        cert_dir_at = dirs_at + 4 * 8
        cert_off = cert_size = 0
        if n_dirs > 4:
            cert_off, cert_size = u32(cert_dir_at), u32(cert_dir_at + 4)
        h = hashlib.new(algorithm)
        h.update(pe[:checksum_at])
        if n_dirs > 4:
            h.update(pe[checksum_at + 4:cert_dir_at])
            h.update(pe[cert_dir_at + 8:size_of_headers])
        else:
            h.update(pe[checksum_at + 4:size_of_headers])
        sections_at = opt + opt_size
        sections = []
        for i in range(n_sections):
            s = sections_at + 40 * i
            raw_size, raw_ptr = u32(s + 16), u32(s + 20)
            if raw_size:
                sections.append((raw_ptr, raw_size))
        hashed = size_of_headers
        for raw_ptr, raw_size in sorted(sections):
            if raw_ptr + raw_size > len(pe):
                raise UnsupportedInputError("PE section extends past the end of the file")
            h.update(pe[raw_ptr:raw_ptr + raw_size])
            hashed += raw_size
        end = len(pe) - cert_size if cert_off and cert_size else len(pe)
        if end > hashed:
            h.update(pe[hashed:end])
        return h.digest()
    except struct.error:
        raise UnsupportedInputError("kernel PE headers are truncated") from None


def qemu_patched_kernel(kernel: bytes, initrd_size: int | None) -> bytes:
    """The bzImage bytes QEMU < 10 exposes over fw_cfg: setup header fields rewritten.

    type_of_loader 0xb0, loadflags |= CAN_USE_HEAP (0x81), heap_end_ptr 0xfe00, cmd_line_ptr
    0x20000, and, with an initrd, ramdisk_image 0x80000000 (a placeholder) and ramdisk_size.
    """
    if len(kernel) < 0x230 or kernel[0x202:0x206] != b"HdrS":
        raise UnsupportedInputError("kernel has no Linux boot protocol header (HdrS)")
    patched = bytearray(kernel)
    patched[0x210] = 0xB0
    patched[0x211] = 0x81
    patched[0x224:0x226] = b"\x00\xfe"
    patched[0x228:0x22C] = b"\x00\x00\x02\x00"
    if initrd_size is not None:
        struct.pack_into("<II", patched, 0x218, 0x80000000, initrd_size)
    return bytes(patched)


def rtmr1(kernel_authenticode: bytes) -> bytes:
    value = ZERO48
    for digest in (kernel_authenticode, hashlib.sha384(_CALLING).digest(), SEPARATOR,
                   hashlib.sha384(_EXIT_INVOCATION).digest(), hashlib.sha384(_EXIT_SUCCESS).digest()):
        value = rtmr_extend(value, digest)
    return value


def efi_stub_cmdline(cmdline: str, has_initrd: bool, initrd_arg: InitrdArg) -> bytes:
    line = cmdline
    if has_initrd and initrd_arg is InitrdArg.PREPEND:
        line = f"initrd=initrd {cmdline}" if cmdline else "initrd=initrd"
    elif has_initrd and initrd_arg is InitrdArg.APPEND:
        line = f"{cmdline} initrd=initrd" if cmdline else "initrd=initrd"
    return line.encode("utf-16-le") + b"\0\0"


def rtmr2(cmdline: str, initrd: bytes | None, initrd_arg: InitrdArg = InitrdArg.PREPEND) -> bytes:
    line = efi_stub_cmdline(cmdline, initrd is not None, initrd_arg)
    value = rtmr_extend(ZERO48, hashlib.sha384(line).digest())
    if initrd is not None:
        value = rtmr_extend(value, hashlib.sha384(initrd).digest())
    return value


def predict_rtmrs(inputs: TdxBootInputs, rtmr0: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0 (given), RTMR1 and RTMR2 (predicted from the image), RTMR3 (zero)."""
    if len(rtmr0) != 48:
        raise UnsupportedInputError(f"RTMR0 must be 48 bytes, got {len(rtmr0)}")
    kernel = inputs.kernel
    if inputs.qemu_patches_kernel:
        kernel = qemu_patched_kernel(kernel, len(inputs.initrd) if inputs.initrd is not None else None)
    return (rtmr0, rtmr1(authenticode_digest(kernel)),
            rtmr2(inputs.cmdline, inputs.initrd, inputs.initrd_arg), ZERO48)


def uefi_variable_data(vendor: str, name: str, data: bytes = b"") -> bytes:
    """UEFI_VARIABLE_DATA as measured by EV_EFI_VARIABLE_* events."""
    encoded = name.encode("utf-16-le")
    return guid_le(vendor) + struct.pack("<QQ", len(encoded) // 2, len(data)) + encoded + data


def rtmr0_events(td_hob: bytes, cfv: bytes, acpi: Sequence[bytes], boot_order: bytes, boot0000: bytes,
                 secure_boot_vars: Sequence[tuple[str, str, bytes]] | None = None) -> list[bytes]:
    """RTMR0 digests of stock OVMF in direct boot, from the platform-dependent digests.

    ``td_hob``, ``cfv``, the three ``acpi`` digests and the BootOrder/Boot0000 digests depend on the
    QEMU version, memory size, machine topology and firmware build, so they are inputs. The Secure Boot
    variable events (empty SecureBoot, PK, KEK, db, dbx unless given) and the separator are computed.
    """
    if len(acpi) != 3:
        raise UnsupportedInputError(f"RTMR0 needs 3 ACPI digests (loader, RSDP, tables), got {len(acpi)}")
    variables = secure_boot_vars if secure_boot_vars is not None else [
        (EFI_GLOBAL_VARIABLE, "SecureBoot", b""), (EFI_GLOBAL_VARIABLE, "PK", b""),
        (EFI_GLOBAL_VARIABLE, "KEK", b""), (EFI_IMAGE_SECURITY_DATABASE, "db", b""),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx", b""),
    ]
    digests = [td_hob, cfv]
    digests += [hashlib.sha384(uefi_variable_data(g, n, d)).digest() for g, n, d in variables]
    digests += [SEPARATOR, *acpi, boot_order, boot0000]
    return digests


def rtmr0_from_digests(digests: Sequence[bytes]) -> bytes:
    value = ZERO48
    for d in digests:
        value = rtmr_extend(value, d)
    return value


def rtmr0_from_log(events: Sequence[Event]) -> bytes:
    """RTMR0 replayed from an event log captured on the target host configuration."""
    return replay(events)[0]

