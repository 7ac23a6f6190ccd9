"""Launch digests for SEV, SEV-ES and SEV-SNP guests booted by QEMU (or EC2/GCE) with OVMF.

SNP sequence (as QEMU and OVMF perform it): every firmware page as NORMAL at its GPA; then the SEV
metadata sections in file order (SEC_MEM -> ZERO pages, or UNMEASURED on GCE; SECRETS; CPUID,
deferred to the end on EC2; SVSM_CAA -> ZERO; KERNEL_HASHES -> the hashes-table page as NORMAL when a
kernel is given, else ZERO); then one VMSA per vCPU (BSP, then APs).

The work splits into a part that does not depend on the vCPUs (:func:`snp_prefix`, which hashes the
firmware) and a cheap tail (:func:`add_vcpus`), so callers measuring many vCPU counts and CPU models
hash the firmware once. ``sev`` and ``seves`` are plain SHA-256 over the measured bytes, in the same order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from image.measure.digest import LaunchDigest, PageType
from image.measure.errors import UnsupportedInputError
from image.measure.firmware import Firmware, HashTableArea, SectionType, parse_firmware
from image.measure.sev_hashes import HASHES_TABLE_SIZE, BootHashes
from image.measure.vmsa import BSP_EIP, VmmType, sev_es_vmsa_page, snp_vmsa_page, svsm_vmsa_page

__all__ = [
    "add_vcpus",
    "ovmf_pages_digest",
    "sev_digest",
    "seves_digest",
    "seves_vmsa_pages",
    "snp_launch_digest",
    "snp_prefix",
    "snp_vmsa_pages",
    "svsm_launch_digest",
    "svsm_parse",
    "svsm_vmsa_pages",
]

# What sev-snp-measure prints for these cases, kept verbatim so users recognise them.
NO_KERNEL_HASHES_SECTION = "Kernel specified but OVMF metadata doesn't include SNP_KERNEL_HASHES section"
NO_KERNEL_HASHES_TABLE = "Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement"
MAX_VCPUS = 4096


def ovmf_pages_digest(fw: Firmware) -> LaunchDigest:
    """The digest after the firmware pages only (sev-snp-measure mode ``snp:ovmf-hash``)."""
    return LaunchDigest().update_normal_pages(fw.gpa, fw.data)


def _check_area(area: HashTableArea) -> None:
    # QEMU refuses to launch when the table does not fit the area the firmware reserved.
    if area.size < HASHES_TABLE_SIZE:
        raise UnsupportedInputError(
            f"SEV hash table area is 0x{area.size:x} bytes, smaller than the {HASHES_TABLE_SIZE}-byte table")


def _hashes_page(fw: Firmware, boot: BootHashes, section_size: int) -> bytes:
    """The page QEMU measures for a KERNEL_HASHES section: the table at the area's page offset."""
    area = fw.hash_table_area
    if area is None:
        raise UnsupportedInputError(NO_KERNEL_HASHES_TABLE)
    if section_size != 0x1000:
        raise UnsupportedInputError(
            f"SNP_KERNEL_HASHES section must be one page, is 0x{section_size:x} bytes")
    _check_area(area)
    # OVMF reads the table at the area's GPA; unless that page is a measured KERNEL_HASHES page the
    # host could put any hashes there without changing the measurement. QEMU does not check this.
    pages = {s.gpa for s in fw.sev_sections if s.type is SectionType.SNP_KERNEL_HASHES}
    if area.gpa & ~0xFFF not in pages:
        raise UnsupportedInputError(
            f"SEV hash table at GPA 0x{area.gpa:x} is outside every SNP_KERNEL_HASHES page")
    return boot.page(area.gpa & 0xFFF)


def snp_prefix(
    fw: Firmware,
    boot: BootHashes | None = None,
    vmm: VmmType = VmmType.QEMU,
    ovmf_hash: LaunchDigest | None = None,
) -> LaunchDigest:
    """Firmware pages (or the supplied ``ovmf_hash``) plus metadata sections: everything before the VMSAs."""
    if boot is not None and not fw.has_section(SectionType.SNP_KERNEL_HASHES):
        raise UnsupportedInputError(NO_KERNEL_HASHES_SECTION)
    ld = ovmf_hash if ovmf_hash is not None else ovmf_pages_digest(fw)
    for section in fw.sev_sections:
        kind = section.type
        if kind is SectionType.SNP_SEC_MEM:
            page_type = PageType.UNMEASURED if vmm is VmmType.GCE else PageType.ZERO
            ld = ld.update_empty_pages(page_type, section.gpa, section.size)
        elif kind is SectionType.SNP_SECRETS:
            ld = ld.update(PageType.SECRETS, section.gpa)
        elif kind is SectionType.CPUID:
            if vmm is not VmmType.EC2:
                ld = ld.update(PageType.CPUID, section.gpa)
        elif kind is SectionType.SVSM_CAA:
            ld = ld.update_empty_pages(PageType.ZERO, section.gpa, section.size)
        elif kind is SectionType.SNP_KERNEL_HASHES:
            if boot is None:
                ld = ld.update_empty_pages(PageType.ZERO, section.gpa, section.size)
            else:
                ld = ld.update_normal_pages(section.gpa, _hashes_page(fw, boot, section.size))
    if vmm is VmmType.EC2:  # EC2 measures the CPUID pages last
        for section in fw.sev_sections:
            if section.type is SectionType.CPUID:
                ld = ld.update(PageType.CPUID, section.gpa)
    return ld


def _ap_eip(fw: Firmware) -> int:
    eip = fw.sev_es_reset_eip
    if eip is None:
        raise UnsupportedInputError("firmware has no SEV-ES reset block entry (AP reset address)")
    return eip


def _check_vcpus(vcpus: int) -> None:
    if not 1 <= vcpus <= MAX_VCPUS:
        raise UnsupportedInputError(f"vCPU count must be 1..{MAX_VCPUS}, got {vcpus}")


def snp_vmsa_pages(
    fw: Firmware, vcpus: int, vcpu_sig: int | None, guest_features: int, vmm: VmmType = VmmType.QEMU
) -> Iterator[bytes]:
    """The VMSA pages of an SNP launch in measurement order (BSP first)."""
    _check_vcpus(vcpus)
    if vcpu_sig is None:
        if vmm is not VmmType.GCE:
            raise UnsupportedInputError(f"a vCPU type or signature is required for VMM {vmm.value}")
        vcpu_sig = 0  # GCE ignores the signature (RDX is fixed)
    ap_eip = _ap_eip(fw)
    yield snp_vmsa_page(BSP_EIP, guest_features, vcpu_sig, vmm)
    if vcpus > 1:
        if ap_eip == 0:
            raise UnsupportedInputError("firmware SEV-ES reset block has AP reset address 0")
        ap = snp_vmsa_page(ap_eip, guest_features, vcpu_sig, vmm)
        for _ in range(vcpus - 1):
            yield ap


def add_vcpus(
    prefix: LaunchDigest,
    fw: Firmware,
    vcpus: int,
    vcpu_sig: int | None,
    guest_features: int,
    vmm: VmmType = VmmType.QEMU,
) -> LaunchDigest:
    ld = prefix
    for page in snp_vmsa_pages(fw, vcpus, vcpu_sig, guest_features, vmm):
        ld = ld.update_vmsa_page(page)
    return ld


def snp_launch_digest(
    fw: Firmware,
    vcpus: int,
    vcpu_sig: int | None,
    guest_features: int = 0x1,
    boot: BootHashes | None = None,
    vmm: VmmType = VmmType.QEMU,
    ovmf_hash: LaunchDigest | None = None,
) -> bytes:
    """The 48-byte SNP MEASUREMENT of a guest launched with these inputs."""
    _check_vcpus(vcpus)
    return add_vcpus(snp_prefix(fw, boot, vmm, ovmf_hash), fw, vcpus, vcpu_sig, guest_features, vmm).value


def _sev_base(fw: Firmware, boot: BootHashes | None) -> hashlib._Hash:
    launch = hashlib.sha256(fw.data)
    if boot is not None:
        area = fw.hash_table_area
        if area is None or not fw.supports_kernel_hashes:
            raise UnsupportedInputError(NO_KERNEL_HASHES_TABLE)
        _check_area(area)
        launch.update(boot.table())
    return launch


def sev_digest(fw: Firmware, boot: BootHashes | None = None) -> bytes:
    """SEV (no ES): SHA-256 over the firmware and, with a kernel, the 176-byte hashes table."""
    return _sev_base(fw, boot).digest()


def seves_vmsa_pages(
    fw: Firmware, vcpus: int, vcpu_sig: int | None, vmm: VmmType = VmmType.QEMU
) -> Iterator[bytes]:
    _check_vcpus(vcpus)
    if vcpu_sig is None:
        raise UnsupportedInputError("a vCPU type or signature is required for SEV-ES")
    ap_eip = _ap_eip(fw)
    yield sev_es_vmsa_page(BSP_EIP, vcpu_sig, vmm)
    if vcpus > 1:
        if ap_eip == 0:
            raise UnsupportedInputError("firmware SEV-ES reset block has AP reset address 0")
        ap = sev_es_vmsa_page(ap_eip, vcpu_sig, vmm)
        for _ in range(vcpus - 1):
            yield ap


def seves_digest(
    fw: Firmware, vcpus: int, vcpu_sig: int | None, boot: BootHashes | None = None,
    vmm: VmmType = VmmType.QEMU,
) -> bytes:
    """SEV-ES: SHA-256 over firmware, optional hashes table and the VMSA pages (features 0)."""
    launch = _sev_base(fw, boot)
    for page in seves_vmsa_pages(fw, vcpus, vcpu_sig, vmm):
        launch.update(page)
    return launch.digest()


def svsm_parse(ovmf: Firmware, svsm_image: bytes, vars_size: int) -> Firmware:
    """Map the SVSM image so it ends below the OVMF variable store, which ends where OVMF code starts."""
    if not 0 <= vars_size <= ovmf.gpa:
        raise UnsupportedInputError(f"OVMF vars size 0x{vars_size:x} does not fit below the firmware")
    return parse_firmware(svsm_image, end_gpa=ovmf.gpa - vars_size)


def svsm_vmsa_pages(svsm: Firmware, vcpus: int, vcpu_sig: int) -> Iterator[bytes]:
    _check_vcpus(vcpus)
    offset = svsm.svsm_info_offset
    if offset is None:
        raise UnsupportedInputError("SVSM image has no SVSM info table entry (entry point)")
    page = svsm_vmsa_page(svsm.gpa + offset, vcpu_sig)
    for _ in range(vcpus):
        yield page


def svsm_launch_digest(ovmf: Firmware, svsm_image: bytes, vars_size: int, vcpus: int, vcpu_sig: int) -> bytes:
    """snp:svsm (QEMU only): OVMF pages, SVSM pages, SVSM metadata sections, identical VMSAs per vCPU."""
    svsm = svsm_parse(ovmf, svsm_image, vars_size)
    ld = ovmf_pages_digest(ovmf).update_normal_pages(svsm.gpa, svsm.data)
    ld = snp_prefix(svsm, None, VmmType.QEMU, ovmf_hash=ld)
    for page in svsm_vmsa_pages(svsm, vcpus, vcpu_sig):
        ld = ld.update_vmsa_page(page)
    return ld.value

