"""Initial VMSA (SEV-ES save area) pages as QEMU/KVM, EC2 and GCE create them, and vCPU signatures.

Only the registers the VMM sets at reset are non-zero; the layout matches host kernels >= 6.10
(struct sev_es_save_area). The BSP starts at the reset vector 0xfffffff0; APs start at the address
in the firmware's SEV-ES reset block.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from image.measure.errors import UnsupportedInputError

__all__ = [
    "BSP_EIP",
    "VCPU_SIGNATURES",
    "VmmType",
    "cpu_signature",
    "parse_vcpu",
    "sev_es_vmsa_page",
    "snp_vmsa_page",
    "svsm_vmsa_page",
]

PAGE_SIZE: Final = 0x1000
BSP_EIP: Final = 0xFFFFFFF0

# QEMU -cpu model -> CPUID(1).EAX; the value KVM puts in RDX at reset.
VCPU_SIGNATURES: Final[dict[str, int]] = {
    **dict.fromkeys(("EPYC", "EPYC-v1", "EPYC-v2", "EPYC-IBPB", "EPYC-v3", "EPYC-v4"), 0x800F12),
    **dict.fromkeys(("EPYC-Rome", "EPYC-Rome-v1", "EPYC-Rome-v2", "EPYC-Rome-v3"), 0x830F10),
    **dict.fromkeys(("EPYC-Milan", "EPYC-Milan-v1", "EPYC-Milan-v2"), 0xA00F11),
    **dict.fromkeys(("EPYC-Genoa", "EPYC-Genoa-v1"), 0xA10F10),
    "EPYC-Turin": 0xB00F00,
}


class VmmType(enum.Enum):
    QEMU = "QEMU"
    EC2 = "ec2"
    GCE = "gce"


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """CPUID(1).EAX for a family/model/stepping (families above 15 use the extended family field)."""
    if not (0 <= family <= 0xFF + 0xF and 0 <= model <= 0xFF and 0 <= stepping <= 0xF):
        raise UnsupportedInputError(f"vCPU family/model/stepping out of range: {family}/{model}/{stepping}")
    if family > 0xF:
        ext_family, base_family = family - 0xF, 0xF
    else:
        ext_family, base_family = 0, family
    return (ext_family << 20) | ((model >> 4) << 16) | (base_family << 8) | ((model & 0xF) << 4) | stepping


def parse_vcpu(spec: str) -> int:
    """A vCPU given as a QEMU model name (``EPYC-Milan``) or a signature (``0xa00f11``)."""
    if spec in VCPU_SIGNATURES:
        return VCPU_SIGNATURES[spec]
    try:
        value = int(spec, 0)
    except ValueError:
        raise UnsupportedInputError(
            f"unknown vCPU type {spec!r}: expected one of {', '.join(VCPU_SIGNATURES)} or a signature"
        ) from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise UnsupportedInputError(f"vCPU signature {spec!r} is not a u32")
    return value


def _segment(page: bytearray, offset: int, selector: int, attrib: int, limit: int, base: int) -> None:
    struct.pack_into("<HHIQ", page, offset, selector, attrib, limit, base)


def _common(page: bytearray, cr0: int) -> None:
    _segment(page, 0x60, 0, 0, 0xFFFF, 0)  # GDTR
    _segment(page, 0x70, 0, 0x82, 0xFFFF, 0)  # LDTR
    _segment(page, 0x80, 0, 0, 0xFFFF, 0)  # IDTR
    struct.pack_into("<Q", page, 0xD0, 0x1000)  # EFER.SVME, set by KVM
    struct.pack_into("<Q", page, 0x148, 0x40)  # CR4.MCE, set by KVM
    struct.pack_into("<Q", page, 0x158, cr0)
    struct.pack_into("<Q", page, 0x160, 0x400)  # DR7
    struct.pack_into("<Q", page, 0x168, 0xFFFF0FF0)  # DR6
    struct.pack_into("<Q", page, 0x170, 0x2)  # RFLAGS
    struct.pack_into("<Q", page, 0x3E8, 0x1)  # XCR0


def snp_vmsa_page(eip: int, sev_features: int, vcpu_sig: int, vmm: VmmType = VmmType.QEMU) -> bytes:
    """The VMSA of a vCPU starting in real mode at ``eip`` (SNP and, with features 0, SEV-ES)."""
    if not 0 <= eip <= 0xFFFFFFFF:
        raise UnsupportedInputError(f"reset EIP 0x{eip:x} is not a u32")
    if not 0 <= sev_features < 1 << 64:
        raise UnsupportedInputError(f"guest features 0x{sev_features:x} is not a u64")
    g_pat = 0x0007040600070406
    cs_attrib, ss_attrib, tr_attrib = 0x9B, 0x93, 0x8B
    rdx, mxcsr, fcw = vcpu_sig, 0x1F80, 0x37F
    if vmm is VmmType.EC2:
        cs_attrib = 0x9A if eip == BSP_EIP else 0x9B
        ss_attrib, tr_attrib = 0x92, 0x83
        rdx, mxcsr, fcw = 0x600, 0, 0
    elif vmm is VmmType.GCE:
        g_pat = 0x00070106  # the GCE hypervisor overwrites the default PAT
        rdx, mxcsr, fcw = 0x600, 0, 0
    page = bytearray(PAGE_SIZE)
    for offset in (0x00, 0x30, 0x40, 0x50):  # ES, DS, FS, GS
        _segment(page, offset, 0, 0x93, 0xFFFF, 0)
    _segment(page, 0x10, 0xF000, cs_attrib, 0xFFFF, eip & 0xFFFF0000)
    _segment(page, 0x20, 0, ss_attrib, 0xFFFF, 0)
    _segment(page, 0x90, 0, tr_attrib, 0xFFFF, 0)
    _common(page, cr0=0x10)
    struct.pack_into("<Q", page, 0x178, eip & 0xFFFF)  # RIP
    struct.pack_into("<Q", page, 0x268, g_pat)
    struct.pack_into("<Q", page, 0x310, rdx)
    struct.pack_into("<Q", page, 0x3B0, sev_features)
    struct.pack_into("<I", page, 0x408, mxcsr)
    struct.pack_into("<H", page, 0x410, fcw)
    return bytes(page)


def sev_es_vmsa_page(eip: int, vcpu_sig: int, vmm: VmmType = VmmType.QEMU) -> bytes:
    """SEV-ES VMSAs carry no SEV features."""
    return snp_vmsa_page(eip, 0, vcpu_sig, vmm)


def svsm_vmsa_page(eip: int, vcpu_sig: int) -> bytes:
    """The VMSA QEMU builds for Coconut-SVSM: protected mode at the SVSM entry, features fixed to 0x1.

    x87 FCW stays 0: sev-snp-measure sets it through a misspelled keyword, and its hardware-checked
    digests were taken that way, so matching them means leaving it 0.
    """
    page = bytearray(PAGE_SIZE)
    for offset in (0x00, 0x20, 0x30, 0x40):  # ES, SS, DS, FS
        _segment(page, offset, 16, 0xC93, 0xFFFFFFFF, 0)
    _segment(page, 0x10, 8, 0xC9B, 0xFFFFFFFF, 0)
    _segment(page, 0x50, 0, 0x93, 0xFFFF, 0)  # GS
    _segment(page, 0x90, 0, 0x8B, 0xFFFF, 0)  # TR
    _common(page, cr0=0x11)
    struct.pack_into("<Q", page, 0x178, eip)
    struct.pack_into("<Q", page, 0x268, 0x0007040600070406)
    struct.pack_into("<Q", page, 0x310, vcpu_sig)
    struct.pack_into("<Q", page, 0x3B0, 0x1)
    struct.pack_into("<I", page, 0x408, 0x1F80)
    return bytes(page)
