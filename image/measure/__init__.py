"""Launch measurements: predict what the CPU will report for a correctly launched pod VM.

Layout: ``firmware`` (OVMF GUID table + SEV metadata), ``digest`` (SNP PAGE_INFO update), ``vmsa``
(initial register pages, vCPU signatures), ``sev_hashes`` (kernel/initrd/cmdline table), ``snp``
(SEV / SEV-ES / SNP / SVSM digest sequences), ``idblock`` (ID block, Contrast's deterministic ID key,
vCPU iteration), ``tdvf`` (TDX metadata, MRTD), ``eventlog`` (CCEL parsing, RTMR replay), ``tdx_boot``
(RTMR predictions for direct kernel boot), ``reference_values`` (manifest ReferenceValues JSON) and
``cli``. Everything except ``cli`` is pure: bytes in, digests out.
"""

from image.measure.errors import (
    EventLogError,
    FirmwareError,
    ImageDescriptionError,
    MeasureError,
    UnsupportedInputError,
)
from image.measure.firmware import Firmware, SectionType, parse_firmware
from image.measure.sev_hashes import BootHashes
from image.measure.snp import (
    ovmf_pages_digest,
    sev_digest,
    seves_digest,
    snp_launch_digest,
    svsm_launch_digest,
)
from image.measure.vmsa import VmmType, parse_vcpu

__all__ = [
    "BootHashes",
    "EventLogError",
    "Firmware",
    "FirmwareError",
    "ImageDescriptionError",
    "MeasureError",
    "SectionType",
    "UnsupportedInputError",
    "VmmType",
    "ovmf_pages_digest",
    "parse_firmware",
    "parse_vcpu",
    "sev_digest",
    "seves_digest",
    "snp_launch_digest",
    "svsm_launch_digest",
]
