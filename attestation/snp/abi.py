"""SEV-SNP ATTESTATION_REPORT: bytes <-> structure, strictly. No I/O, no policy.

Layout: AMD SEV-SNP ABI spec 56860 (report versions 2-5), table "ATTESTATION_REPORT Structure".
The parser checks sizes, the version, the signature algorithm, every reserved (MBZ) range for the
given version, the must-be-one policy bit 17, and the reserved bits of POLICY, PLATFORM_INFO and
SIGNER_INFO. It leaves to `verify` the signature and to `validate` everything that depends on
what the verifier wants (debug allowed, TCB minimums, ...).

TCB_VERSION values stay raw 8-byte strings: their meaning depends on the CPU generation (Turin
lays them out differently), which is known only once the signing certificate is known.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ..errors import ParseError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_OFFSET = 0x2A0
SIG_COMPONENT_SIZE = 0x48  # R and S each take 72 bytes, little-endian; P-384 uses 48 of them
MIN_VERSION = 2
MAX_VERSION = 5
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

REPORT_DATA_SIZE = 64
MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
ID_KEY_DIGEST_SIZE = 48
REPORT_ID_SIZE = 32
CHIP_ID_SIZE = 64
FAMILY_ID_SIZE = 16
TCB_SIZE = 8

# Named bits of GUEST_POLICY (u64 at 0x08).
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
POLICY_CXL_ALLOW = 1 << 21
POLICY_MEM_AES_256_XTS = 1 << 22
POLICY_RAPL_DIS = 1 << 23
POLICY_CIPHERTEXT_HIDING = 1 << 24
POLICY_PAGE_SWAP_DISABLE = 1 << 25
POLICY_MBZ_MASK = ~((1 << 26) - 1) & 0xFFFF_FFFF_FFFF_FFFF

# Named bits of PLATFORM_INFO (u64 at 0x40).
PLATFORM_SMT_EN = 1 << 0
PLATFORM_TSME_EN = 1 << 1
PLATFORM_ECC_EN = 1 << 2
PLATFORM_RAPL_DIS = 1 << 3
PLATFORM_CIPHERTEXT_HIDING_EN = 1 << 4
PLATFORM_ALIAS_CHECK_COMPLETE = 1 << 5
# Bit 6: reserved per go-sev-guest/virtee, yet set (0x65) on a real Turin v5 report. Accepted and
# exposed without a name: no public specification names it yet.
PLATFORM_BIT6 = 1 << 6
PLATFORM_TIO_EN = 1 << 7
PLATFORM_MBZ_MASK = ~0xFF & 0xFFFF_FFFF_FFFF_FFFF


class SigningKey(enum.IntEnum):
    """SIGNER_INFO bits 4:2."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class GuestPolicy:
    abi_minor: int
    abi_major: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allow: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding_dram: bool
    page_swap_disable: bool

    def to_int(self) -> int:
        v = self.abi_minor | (self.abi_major << 8) | POLICY_RESERVED_ONE
        for flag, bit in (
            (self.smt, POLICY_SMT),
            (self.migrate_ma, POLICY_MIGRATE_MA),
            (self.debug, POLICY_DEBUG),
            (self.single_socket, POLICY_SINGLE_SOCKET),
            (self.cxl_allow, POLICY_CXL_ALLOW),
            (self.mem_aes_256_xts, POLICY_MEM_AES_256_XTS),
            (self.rapl_dis, POLICY_RAPL_DIS),
            (self.ciphertext_hiding_dram, POLICY_CIPHERTEXT_HIDING),
            (self.page_swap_disable, POLICY_PAGE_SWAP_DISABLE),
        ):
            if flag:
                v |= bit
        return v


def parse_policy(value: int) -> GuestPolicy:
    if not value & POLICY_RESERVED_ONE:
        raise ParseError("policy[17] is reserved, must be 1, got 0", field="policy", offset=0x08, found=value)
    if value & POLICY_MBZ_MASK:
        raise ParseError(
            f"mbz range policy[0x1a:0x3f] not all zero: 0x{value:016x}",
            field="policy",
            offset=0x08,
            found=value,
        )
    return GuestPolicy(
        abi_minor=value & 0xFF,
        abi_major=(value >> 8) & 0xFF,
        smt=bool(value & POLICY_SMT),
        migrate_ma=bool(value & POLICY_MIGRATE_MA),
        debug=bool(value & POLICY_DEBUG),
        single_socket=bool(value & POLICY_SINGLE_SOCKET),
        cxl_allow=bool(value & POLICY_CXL_ALLOW),
        mem_aes_256_xts=bool(value & POLICY_MEM_AES_256_XTS),
        rapl_dis=bool(value & POLICY_RAPL_DIS),
        ciphertext_hiding_dram=bool(value & POLICY_CIPHERTEXT_HIDING),
        page_swap_disable=bool(value & POLICY_PAGE_SWAP_DISABLE),
    )


@dataclass(frozen=True)
class PlatformInfo:
    smt_enabled: bool
    tsme_enabled: bool
    ecc_enabled: bool
    rapl_disabled: bool
    ciphertext_hiding_dram_enabled: bool
    alias_check_complete: bool
    bit6: bool
    tio_enabled: bool


def parse_platform_info(value: int) -> PlatformInfo:
    if value & PLATFORM_MBZ_MASK:
        raise ParseError(
            f"unrecognized platform info bit(s): 0x{value & PLATFORM_MBZ_MASK:x}",
            field="platform_info",
            offset=0x40,
            found=value,
        )
    return PlatformInfo(
        smt_enabled=bool(value & PLATFORM_SMT_EN),
        tsme_enabled=bool(value & PLATFORM_TSME_EN),
        ecc_enabled=bool(value & PLATFORM_ECC_EN),
        rapl_disabled=bool(value & PLATFORM_RAPL_DIS),
        ciphertext_hiding_dram_enabled=bool(value & PLATFORM_CIPHERTEXT_HIDING_EN),
        alias_check_complete=bool(value & PLATFORM_ALIAS_CHECK_COMPLETE),
        bit6=bool(value & PLATFORM_BIT6),
        tio_enabled=bool(value & PLATFORM_TIO_EN),
    )


@dataclass(frozen=True)
class SignerInfo:
    author_key_en: bool
    mask_chip_key: bool
    signing_key: SigningKey


def parse_signer_info(value: int) -> SignerInfo:
    if value >> 5:
        raise ParseError(
            f"mbz range data[0x48:0x4C][0x5:0x1f] not all zero: 0x{value:08x}",
            field="signer_info",
            offset=0x48,
            found=value,
        )
    key = (value >> 2) & 0x7
    if key not in (SigningKey.VCEK, SigningKey.VLEK, SigningKey.NONE):
        raise ParseError(f"SIGNING_KEY {key} is reserved", field="signer_info", offset=0x48, found=value)
    return SignerInfo(
        author_key_en=bool(value & 1), mask_chip_key=bool(value & 2), signing_key=SigningKey(key)
    )


@dataclass(frozen=True)
class SnpReport:
    """A parsed ATTESTATION_REPORT. `raw` is the exact input; signatures are checked over it."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: bytes
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: bytes
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int
    raw: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def guest_policy(self) -> GuestPolicy:
        return parse_policy(self.policy)

    @property
    def platform(self) -> PlatformInfo:
        return parse_platform_info(self.platform_info)

    @property
    def signer(self) -> SignerInfo:
        return parse_signer_info(self.signer_info)

    @property
    def signing_key(self) -> SigningKey:
        return self.signer.signing_key

    def to_bytes(self) -> bytes:
        return report_to_bytes(self)


def _mbz(data: bytes, lo: int, hi: int) -> None:
    chunk = data[lo:hi]
    if any(chunk):
        raise ParseError(
            f"mbz range data[0x{lo:x}:0x{hi:x}] not all zero: {chunk.hex()}",
            field=f"reserved[0x{lo:x}:0x{hi:x}]",
            offset=lo,
            found=bytes(chunk),
        )


def _mbz_ranges(version: int) -> list[tuple[int, int]]:
    ranges = [(0x4C, 0x50), (0x1EB, 0x1EC), (0x1EF, 0x1F0), (0x330, 0x4A0)]
    ranges.append((0x188, 0x1A0) if version == 2 else (0x18B, 0x1A0))
    ranges.append((0x1F8, 0x2A0) if version < 5 else (0x208, 0x2A0))
    return ranges


def _le_sig(component: bytes) -> int:
    return int.from_bytes(component, "little")


def parse_report(data: bytes) -> SnpReport:
    """Parse a 1184-byte SNP report strictly. Raises `ParseError`."""
    data = bytes(data)
    if len(data) != REPORT_SIZE:
        raise ParseError(
            f"report must be exactly {REPORT_SIZE} (0x4A0) bytes, got {len(data)}",
            field="report",
            found=len(data),
        )
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0x00)
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ParseError(
            f"report VERSION {version} is not supported (accepted {MIN_VERSION}..{MAX_VERSION})",
            field="version",
            offset=0,
            found=version,
        )
    vmpl, sig_algo = struct.unpack_from("<II", data, 0x30)
    if sig_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise ParseError(
            f"SIGNATURE_ALGO is {sig_algo}, expected 1 (ECDSA P-384 with SHA-384)",
            field="signature_algo",
            offset=0x34,
            found=sig_algo,
        )
    (platform_info, signer_info) = struct.unpack_from("<QI", data, 0x40)
    for lo, hi in _mbz_ranges(version):
        _mbz(data, lo, hi)
    parse_signer_info(signer_info)
    parse_policy(policy)
    parse_platform_info(platform_info)
    if vmpl > 3:
        raise ParseError(f"VMPL {vmpl} is out of range 0..3", field="vmpl", offset=0x30, found=vmpl)
    r_raw = data[0x2A0:0x2E8]
    s_raw = data[0x2E8:0x330]
    # P-384 values use 48 of the 72 bytes; the upper 24 must be zero.
    _mbz(data, 0x2A0 + 48, 0x2E8)
    _mbz(data, 0x2E8 + 48, 0x330)
    cur = data[0x1E8:0x1EB]
    com = data[0x1EC:0x1EF]
    v3 = version >= 3
    v5 = version >= 5
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=data[0x38:0x40],
        platform_info=platform_info,
        signer_info=signer_info,
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=data[0x180:0x188],
        cpuid_fam_id=data[0x188] if v3 else None,
        cpuid_mod_id=data[0x189] if v3 else None,
        cpuid_step=data[0x18A] if v3 else None,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=data[0x1E0:0x1E8],
        current_build=cur[0],
        current_minor=cur[1],
        current_major=cur[2],
        committed_build=com[0],
        committed_minor=com[1],
        committed_major=com[2],
        launch_tcb=data[0x1F0:0x1F8],
        launch_mit_vector=struct.unpack_from("<Q", data, 0x1F8)[0] if v5 else None,
        current_mit_vector=struct.unpack_from("<Q", data, 0x200)[0] if v5 else None,
        signature_r=_le_sig(r_raw),
        signature_s=_le_sig(s_raw),
        raw=data,
    )


def report_to_bytes(r: SnpReport) -> bytes:
    """Serialise the fields of `r` (the inverse of `parse_report` for well-formed reports)."""
    out = bytearray(REPORT_SIZE)
    struct.pack_into("<IIQ", out, 0x00, r.version, r.guest_svn, r.policy)
    out[0x10:0x20] = _sized(r.family_id, 16, "family_id")
    out[0x20:0x30] = _sized(r.image_id, 16, "image_id")
    struct.pack_into("<II", out, 0x30, r.vmpl, r.signature_algo)
    out[0x38:0x40] = _sized(r.current_tcb, 8, "current_tcb")
    struct.pack_into("<QI", out, 0x40, r.platform_info, r.signer_info)
    out[0x50:0x90] = _sized(r.report_data, 64, "report_data")
    out[0x90:0xC0] = _sized(r.measurement, 48, "measurement")
    out[0xC0:0xE0] = _sized(r.host_data, 32, "host_data")
    out[0xE0:0x110] = _sized(r.id_key_digest, 48, "id_key_digest")
    out[0x110:0x140] = _sized(r.author_key_digest, 48, "author_key_digest")
    out[0x140:0x160] = _sized(r.report_id, 32, "report_id")
    out[0x160:0x180] = _sized(r.report_id_ma, 32, "report_id_ma")
    out[0x180:0x188] = _sized(r.reported_tcb, 8, "reported_tcb")
    if r.version >= 3:
        out[0x188] = r.cpuid_fam_id or 0
        out[0x189] = r.cpuid_mod_id or 0
        out[0x18A] = r.cpuid_step or 0
    out[0x1A0:0x1E0] = _sized(r.chip_id, 64, "chip_id")
    out[0x1E0:0x1E8] = _sized(r.committed_tcb, 8, "committed_tcb")
    out[0x1E8:0x1EB] = bytes([r.current_build, r.current_minor, r.current_major])
    out[0x1EC:0x1EF] = bytes([r.committed_build, r.committed_minor, r.committed_major])
    out[0x1F0:0x1F8] = _sized(r.launch_tcb, 8, "launch_tcb")
    if r.version >= 5:
        struct.pack_into("<QQ", out, 0x1F8, r.launch_mit_vector or 0, r.current_mit_vector or 0)
    out[0x2A0:0x2E8] = r.signature_r.to_bytes(SIG_COMPONENT_SIZE, "little")
    out[0x2E8:0x330] = r.signature_s.to_bytes(SIG_COMPONENT_SIZE, "little")
    return bytes(out)


def _sized(value: bytes, size: int, name: str) -> bytes:
    if len(value) != size:
        raise ParseError(f"{name} must be {size} bytes, got {len(value)}", field=name, found=len(value))
    return value


def tcb_u64(tcb: bytes) -> int:
    """TCB_VERSION printed as go-sev-guest does (little-endian u64)."""
    return int.from_bytes(tcb, "little")
