"""The manifest's ``ReferenceValues`` for our pod-VM image, in Contrast's JSON shape.

SNP (Contrast's ReferenceValues.snp): one entry per (product, vCPU count) with ``TrustedMeasurement`` the
launch digest, the guest policy the runtime launches with (``0x30000``: SMT allowed, no debug, no
migration agent, not single-socket, ABI 0.0) and ``PlatformInfo {SMTEnabled: true}``. With
``vcpu_iteration`` one entry per product carries the 1-vCPU seed and ``APEIP`` instead, and the
verifier extends it. Keys are Go's PascalCase field names, as the manifest uses.

TDX (ReferenceValues.tdx): ``MrTd``, ``Rtmrs[4]``, ``Xfam``; ``MrSeam`` is a platform fact only the
operator knows (the CLI requires it, since the verifier does), and RTMR0 is an input (see ``tdx_boot``).

Measuring is split from reading files: :func:`snp_reference_values` and :func:`tdx_reference_values`
take bytes; :func:`load_image_description` reads the image helper's BUILD.json strictly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from image.measure.errors import ImageDescriptionError, UnsupportedInputError
from image.measure.firmware import Firmware
from image.measure.idblock import GuestPolicy, IdBlock, contrast_id_auth
from image.measure.platforms import PRODUCTS
from image.measure.sev_hashes import BootHashes
from image.measure.snp import add_vcpus, snp_prefix, snp_vmsa_pages
from image.measure.tdvf import PageOrder, mrtd
from image.measure.tdx_boot import TdxBootInputs, predict_rtmrs
from image.measure.vmsa import VCPU_SIGNATURES, VmmType

__all__ = [
    "DEFAULT_GUEST_POLICY",
    "PRODUCTS",
    "ImageDescription",
    "MinimumTcb",
    "SnpDigest",
    "id_blocks",
    "load_image_description",
    "snp_digests",
    "snp_reference_values",
    "tdx_reference_values",
]

DEFAULT_GUEST_POLICY: Final = GuestPolicy(SMT=True)
DEFAULT_GUEST_FEATURES: Final = 0x1
DEFAULT_XFAM: Final = "e702060000000000"


@dataclass(frozen=True, slots=True)
class MinimumTcb:
    BootloaderVersion: int
    TEEVersion: int
    SNPVersion: int
    MicrocodeVersion: int

    def __post_init__(self) -> None:
        for value in (self.BootloaderVersion, self.TEEVersion, self.SNPVersion, self.MicrocodeVersion):
            if not 0 <= value <= 0xFF:
                raise UnsupportedInputError(f"TCB component {value} not in 0..255")

    def to_json(self) -> dict[str, int]:
        return {"BootloaderVersion": self.BootloaderVersion, "TEEVersion": self.TEEVersion,
                "SNPVersion": self.SNPVersion, "MicrocodeVersion": self.MicrocodeVersion}


@dataclass(frozen=True, slots=True)
class ImageDescription:
    """The measured boot inputs of a built image (paths resolved against the JSON's directory)."""

    kernel: Path
    initrd: Path | None
    cmdline: str
    root_hash: str

    def boot_hashes(self) -> BootHashes:
        try:
            kernel = self.kernel.read_bytes()
            initrd = self.initrd.read_bytes() if self.initrd else None
        except OSError as exc:
            raise ImageDescriptionError("kernel/initrd", "readable files", str(exc)) from None
        return BootHashes.of(kernel, initrd, self.cmdline)


def load_image_description(path: Path) -> ImageDescription:
    """Read BUILD.json; the command line must name the verity root hash, or the rootfs is unmeasured."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise ImageDescriptionError("file", "readable JSON", str(exc)) from None
    if not isinstance(doc, dict):
        raise ImageDescriptionError("document", "a JSON object", type(doc).__name__)
    base = path.parent

    def field(name: str, required: bool = True) -> str | None:
        value = doc.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value):
            raise ImageDescriptionError(name, "a non-empty string", repr(value))
        return value

    kernel, initrd = field("kernel"), field("initrd", required=False)
    cmdline, root_hash = field("cmdline"), field("root_hash")
    assert kernel is not None and cmdline is not None and root_hash is not None
    try:
        if len(bytes.fromhex(root_hash)) < 16:
            raise ValueError("too short")
    except ValueError:
        raise ImageDescriptionError("root_hash", "hex, at least 16 bytes", repr(root_hash)) from None
    if root_hash.lower() not in cmdline.lower():
        raise ImageDescriptionError("cmdline", f"to contain the root hash {root_hash}", cmdline)
    kernel_path = base / kernel
    initrd_path = base / initrd if initrd else None
    for name, p in (("kernel", kernel_path), ("initrd", initrd_path)):
        if p is not None and not p.is_file():
            raise ImageDescriptionError(name, "an existing file", str(p))
    return ImageDescription(kernel_path, initrd_path, cmdline, root_hash)


@dataclass(frozen=True, slots=True)
class SnpDigest:
    product: str
    vcpus: int
    digest: bytes


def snp_digests(
    ovmf: Firmware,
    boot: BootHashes,
    vcpu_counts: Iterable[int],
    products: Sequence[str] = ("Milan", "Genoa"),
    guest_features: int = DEFAULT_GUEST_FEATURES,
) -> list[SnpDigest]:
    """Launch digests per (product, vCPU count); firmware and metadata are hashed once for all."""
    counts = sorted(set(vcpu_counts))
    if not counts or counts[0] < 1:
        raise UnsupportedInputError(f"vCPU counts must be >= 1, got {counts}")
    prefix = snp_prefix(ovmf, boot, VmmType.QEMU)
    out = []
    for product in products:
        if product not in PRODUCTS:
            raise UnsupportedInputError(f"unknown product {product!r}: expected one of {', '.join(PRODUCTS)}")
        sig = VCPU_SIGNATURES[PRODUCTS[product]]
        ld = add_vcpus(prefix, ovmf, 1, sig, guest_features)
        # The AP page (second of a 2-vCPU launch) extends the digest by one vCPU at a time.
        ap_page = list(snp_vmsa_pages(ovmf, 2, sig, guest_features))[1] if counts[-1] > 1 else b""
        for count in range(1, counts[-1] + 1):
            if count > 1:
                ld = ld.update_vmsa_page(ap_page)
            if count in counts:
                out.append(SnpDigest(product, count, ld.value))
    return out


def snp_reference_values(
    ovmf: Firmware,
    digests: Sequence[SnpDigest],
    policy: GuestPolicy = DEFAULT_GUEST_POLICY,
    minimum_tcb: MinimumTcb | None = None,
    vcpu_iteration: bool = False,
    platform: str | None = "Metal-QEMU-SNP",
) -> list[dict[str, Any]]:
    """``ReferenceValues.snp`` entries for ``digests``.

    With ``vcpu_iteration`` only the 1-vCPU digests are emitted, each with ``APEIP`` (big-endian hex) so
    the verifier extends them to the reported vCPU count.
    """
    entries = []
    for d in digests:
        if vcpu_iteration and d.vcpus != 1:
            continue
        entry: dict[str, Any] = {}
        if platform:
            entry["Platform"] = platform
        entry["ProductName"] = d.product
        entry["TrustedMeasurement"] = d.digest.hex()
        if vcpu_iteration:
            ap_eip = ovmf.sev_es_reset_eip
            if not ap_eip:
                raise UnsupportedInputError("vCPU iteration needs the firmware's AP reset address")
            entry["APEIP"] = ap_eip.to_bytes(4, "big").hex()
        if minimum_tcb is not None:
            entry["MinimumTCB"] = minimum_tcb.to_json()
        entry["GuestPolicy"] = policy.to_json()
        entry["PlatformInfo"] = {"SMTEnabled": True}
        entry["AllowedChipIDs"] = []
        entries.append(entry)
    if vcpu_iteration and not entries:
        raise UnsupportedInputError("vCPU iteration needs the 1-vCPU digests")
    return entries


def id_blocks(digests: Sequence[SnpDigest], policy: GuestPolicy = DEFAULT_GUEST_POLICY) -> dict[str, Any]:
    """Base64 ID block and ID auth per product and vCPU count, for the runtime's launch annotations."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for d in digests:
        block = IdBlock(d.digest, policy.to_u64())
        out.setdefault(d.product, {})[str(d.vcpus)] = {
            "IDBlock": base64.b64encode(block.to_bytes()).decode(),
            "IDAuth": base64.b64encode(contrast_id_auth(block)).decode(),
        }
    return out


def tdx_reference_values(
    ovmf: Firmware,
    inputs: TdxBootInputs,
    rtmr0: bytes,
    order: PageOrder = PageOrder.TWO_PASS,
    xfam: str = DEFAULT_XFAM,
    mrseam: str | None = None,
    platform: str | None = "Metal-QEMU-TDX",
) -> list[dict[str, Any]]:
    """One ``ReferenceValues.tdx`` entry; RTMR0 is platform data supplied by the caller."""
    rtmrs = predict_rtmrs(inputs, rtmr0)
    entry: dict[str, Any] = {}
    if platform:
        entry["Platform"] = platform
    entry["MrTd"] = mrtd(ovmf, order).hex()
    if mrseam is not None:
        entry["MrSeam"] = mrseam
    entry["Rtmrs"] = [r.hex() for r in rtmrs]
    entry["Xfam"] = xfam
    entry["MemoryIntegrity"] = False
    return [entry]
