"""SNP ID block and ID authentication block, including Contrast's deterministic ID key.

The ID block (0x60 bytes) binds a launch digest and guest policy; the PSP refuses a launch whose
digest or policy differs from it, and the report then carries SHA-384 of the ID key. Contrast does
not keep an ID key: it fixes the signature to r=2, s=1 and *recovers* a public key that verifies that
signature over the block's SHA-384, so anyone can rebuild the same key from (digest, policy) and a
verifier can demand that key's digest (Contrast's reference-value check of ID_KEY_DIGEST;
tests/measure/test_idblock.py checks Contrast's vectors).

Also here: a guest policy value (go-sev-guest ``SnpPolicy`` bit layout) and Contrast's vCPU-count
iteration, which extends a 1-vCPU digest by AP VMSA pages.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from attestation.snp import idblock as _snp_idblock
from image.measure.digest import DIGEST_SIZE, LaunchDigest
from image.measure.errors import UnsupportedInputError
from image.measure.vmsa import VmmType, snp_vmsa_page

__all__ = [
    "ID_AUTH_SIZE",
    "ID_BLOCK_SIZE",
    "ID_KEY_SIZE",
    "GuestPolicy",
    "IdBlock",
    "contrast_id_auth",
    "contrast_id_key",
    "extend_vcpus",
    "id_auth",
    "id_key_bytes",
    "id_key_digest",
    "match_vcpu_count",
    "recover_id_keys",
    "sign_id_block",
]

ID_BLOCK_SIZE: Final = 0x60
ID_KEY_SIZE: Final = 0x404
ID_AUTH_SIZE: Final = 0x1000
_SIG_SIZE: Final = 0x200
_COORD: Final = 0x48
_CURVE_P384: Final = 2
_ALGO_ECDSA_P384_SHA384: Final = 1

# Order of NIST P-384 (FIPS 186-4 D.1.2.4), for the signature range check.
_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
# Contrast's fixed ID block signature.
_CONTRAST_R: Final = 2
_CONTRAST_S: Final = 1


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """SNP guest policy (SNP ABI; go-sev-guest ``SnpPolicy`` JSON names). Bit 17 is reserved, always 1."""

    # Field names are the JSON keys Contrast writes (go-sev-guest SnpPolicy).
    ABIMinor: int = 0
    ABIMajor: int = 0
    SMT: bool = True
    MigrateMA: bool = False
    Debug: bool = False
    SingleSocket: bool = False
    CXLAllowed: bool = False
    MemAES256XTS: bool = False
    RAPLDis: bool = False
    CipherTextHidingDRAM: bool = False
    PageSwapDisable: bool = False

    _FLAG_BITS = (("SMT", 16), ("MigrateMA", 18), ("Debug", 19), ("SingleSocket", 20), ("CXLAllowed", 21),
                  ("MemAES256XTS", 22), ("RAPLDis", 23), ("CipherTextHidingDRAM", 24),
                  ("PageSwapDisable", 25))

    def __post_init__(self) -> None:
        if not (0 <= self.ABIMinor <= 0xFF and 0 <= self.ABIMajor <= 0xFF):
            raise UnsupportedInputError(
                f"guest policy ABI version {self.ABIMajor}.{self.ABIMinor} out of range")

    def to_u64(self) -> int:
        value = self.ABIMinor | self.ABIMajor << 8 | 1 << 17
        for name, bit in self._FLAG_BITS:
            if getattr(self, name):
                value |= 1 << bit
        return value

    def to_json(self) -> dict[str, int | bool]:
        """The six fields Contrast's default reference values carry, plus any flag that is set."""
        out: dict[str, int | bool] = {"ABIMinor": self.ABIMinor, "ABIMajor": self.ABIMajor}
        for name, _ in self._FLAG_BITS:
            if name in ("SMT", "MigrateMA", "Debug", "SingleSocket") or getattr(self, name):
                out[name] = bool(getattr(self, name))
        return out


@dataclass(frozen=True, slots=True)
class IdBlock:
    """The 0x60-byte SNP ID block. Contrast uses family ID 01.., image ID 02.., version 1, guest SVN 2."""

    launch_digest: bytes
    policy: int
    family_id: bytes = b"\x01" + bytes(15)
    image_id: bytes = b"\x02" + bytes(15)
    version: int = 1
    guest_svn: int = 2

    def __post_init__(self) -> None:
        if len(self.launch_digest) != DIGEST_SIZE:
            raise UnsupportedInputError(
                f"ID block launch digest must be 48 bytes, got {len(self.launch_digest)}")
        if len(self.family_id) != 16 or len(self.image_id) != 16:
            raise UnsupportedInputError("ID block family and image IDs must be 16 bytes")
        if not 0 <= self.policy < 1 << 64:
            raise UnsupportedInputError(f"guest policy 0x{self.policy:x} is not a u64")

    def to_bytes(self) -> bytes:
        return (self.launch_digest + self.family_id + self.image_id
                + struct.pack("<IIQ", self.version, self.guest_svn, self.policy))


def recover_id_keys(message_hash: bytes, r: int, s: int) -> list[tuple[int, int]]:
    """Both public keys for which (r, s) is a valid ECDSA-P384 signature over ``message_hash``.

    Sorted by (X, Y); R is taken with x = r only (r < p - n, so x = r + n is impossible here).
    """
    if not (0 < r < _N and 0 < s < _N):
        raise UnsupportedInputError("ECDSA signature values out of range")
    # The curve arithmetic is the attestation core's, so the verifier and the builder cannot disagree.
    try:
        return _snp_idblock.recover_candidates(message_hash[:48], r, s)
    except ValueError as exc:
        raise UnsupportedInputError("no curve point has x = r") from exc


def id_key_bytes(x: int, y: int) -> bytes:
    """SNP ``ID_KEY`` layout: curve u32, Qx and Qy little-endian in 0x48-byte fields, zero padding."""
    out = struct.pack("<I", _CURVE_P384) + x.to_bytes(_COORD, "little") + y.to_bytes(_COORD, "little")
    return out + bytes(ID_KEY_SIZE - len(out))


def id_key_digest(key: bytes) -> bytes:
    """What the attestation report carries as ID_KEY_DIGEST / AUTHOR_KEY_DIGEST."""
    return hashlib.sha384(key).digest()


def _signature_bytes(r: int, s: int) -> bytes:
    out = r.to_bytes(_COORD, "little") + s.to_bytes(_COORD, "little")
    return out + bytes(_SIG_SIZE - len(out))


def id_auth(block_sig: bytes, id_key: bytes, id_key_sig: bytes = bytes(_SIG_SIZE),
            author_key: bytes = bytes(ID_KEY_SIZE), auth_key_algo: int = 0) -> bytes:
    """The 0x1000-byte ID authentication information structure."""
    out = struct.pack("<II", _ALGO_ECDSA_P384_SHA384, auth_key_algo) + bytes(0x38)
    out += block_sig + id_key + bytes(0x3C) + id_key_sig + author_key
    return out + bytes(ID_AUTH_SIZE - len(out))


def contrast_id_key(block: IdBlock) -> bytes:
    """The ID_KEY Contrast derives for ``block`` (first recovered candidate in (X, Y) order)."""
    digest = hashlib.sha384(block.to_bytes()).digest()
    x, y = recover_id_keys(digest, _CONTRAST_R, _CONTRAST_S)[0]
    return id_key_bytes(x, y)


def contrast_id_auth(block: IdBlock) -> bytes:
    """ID auth with the fixed signature and recovered key; no author key (AUTH_KEY_ALGO 0)."""
    return id_auth(_signature_bytes(_CONTRAST_R, _CONTRAST_S), contrast_id_key(block))


def sign_id_block(block: IdBlock, id_key: ec.EllipticCurvePrivateKey,
                  author_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """ID auth signed with a real P-384 key (sev-snp-measure ``snp-create-id-block`` style)."""
    def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
        if key.curve.name != "secp384r1":
            raise UnsupportedInputError(f"ID/author keys must be P-384, got {key.curve.name}")
        numbers = key.public_key().public_numbers()
        return id_key_bytes(numbers.x, numbers.y)

    def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
        return _signature_bytes(*decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384()))))

    idk = key_bytes(id_key)
    if author_key is None:
        return id_auth(sign(id_key, block.to_bytes()), idk)
    ak = key_bytes(author_key)
    return id_auth(sign(id_key, block.to_bytes()), idk, sign(author_key, idk), ak, auth_key_algo=1)


def extend_vcpus(seed: bytes, ap_eip: int, vcpu_sig: int, guest_features: int, vcpus: int,
                 vmm: VmmType = VmmType.QEMU) -> bytes:
    """Digest for ``vcpus`` vCPUs from the 1-vCPU digest ``seed``: append vcpus-1 AP VMSA updates."""
    if vcpus < 1:
        raise UnsupportedInputError(f"vCPU count must be >= 1, got {vcpus}")
    ld = LaunchDigest(seed)
    if vcpus > 1:
        page = snp_vmsa_page(ap_eip, guest_features, vcpu_sig, vmm)
        for _ in range(vcpus - 1):
            ld = ld.update_vmsa_page(page)
    return ld.value


def match_vcpu_count(measurement: bytes, seed: bytes, ap_eip: int, vcpu_sig: int, guest_features: int,
                     max_vcpus: int = 220) -> int | None:
    """The vCPU count whose extended digest equals ``measurement`` (Contrast's iterative validator)."""
    ld = LaunchDigest(seed)
    page = snp_vmsa_page(ap_eip, guest_features, vcpu_sig)
    for count in range(1, max_vcpus + 1):
        if ld.value == measurement:
            return count
        ld = ld.update_vmsa_page(page)
    return None

