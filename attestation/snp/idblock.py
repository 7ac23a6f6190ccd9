"""Contrast's deterministic SNP ID block and the ID-key digest it binds into reports.

Contrast launches pod VMs with an ID block whose "signing key" nobody holds: the signature is
fixed (r=2, s=1) and the public key is *recovered* from it and the block's SHA-384, so the key
(and its digest, which the firmware copies into ID_KEY_DIGEST) is a pure function of the launch
digest and the guest policy. A report whose ID_KEY_DIGEST equals the derived digest therefore
proves the VM was launched with exactly that measurement and policy (Contrast checks
ID_KEY_DIGEST this way; tests/attestation checks Contrast's vectors).

Public-key recovery needs raw P-384 arithmetic, which `cryptography` does not expose; the few
affine operations below run once per (measurement, policy) and are cached.
"""

from __future__ import annotations

import functools
import hashlib
import struct

__all__ = [
    "ID_AUTH_SIZE", "ID_BLOCK_SIZE", "ID_KEY_SIZE", "derive_id_key", "id_auth_block", "id_block",
    "id_key_bytes", "id_key_digest", "recover_candidates",
]

# NIST P-384 domain parameters (FIPS 186-4 D.1.2.4).
_P = 2**384 - 2**128 - 2**96 + 2**32 - 1
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
_A = _P - 3
_B = 0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF
_G = (
    0xAA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7,
    0x3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F,
)

ID_BLOCK_SIZE = 0x60
ID_KEY_SIZE = 0x404
ID_AUTH_SIZE = 0x1000
CURVE_P384 = 2
FAMILY_ID = bytes([0x01]) + bytes(15)
IMAGE_ID = bytes([0x02]) + bytes(15)
ID_BLOCK_VERSION = 1
ID_BLOCK_GUEST_SVN = 2
SIG_R = 2
SIG_S = 1

_Point = tuple[int, int] | None


def _add(p1: _Point, p2: _Point) -> _Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    x1, y1 = p1
    x2, y2 = p2
    if x1 == x2:
        if (y1 + y2) % _P == 0:
            return None
        lam = (3 * x1 * x1 + _A) * pow(2 * y1, -1, _P) % _P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, _P) % _P
    x3 = (lam * lam - x1 - x2) % _P
    return x3, (lam * (x1 - x3) - y1) % _P


def _mul(k: int, point: _Point) -> _Point:
    result: _Point = None
    addend = point
    k %= _N
    while k:
        if k & 1:
            result = _add(result, addend)
        addend = _add(addend, addend)
        k >>= 1
    return result


def _neg(point: _Point) -> _Point:
    return None if point is None else (point[0], (-point[1]) % _P)


def id_block(measurement: bytes, policy: int) -> bytes:
    """The 0x60-byte ID block: LD, FAMILY_ID, IMAGE_ID, VERSION, GUEST_SVN, POLICY."""
    if len(measurement) != 48:
        raise ValueError(f"measurement must be 48 bytes, got {len(measurement)}")
    return (
        measurement + FAMILY_ID + IMAGE_ID + struct.pack("<IIQ", ID_BLOCK_VERSION, ID_BLOCK_GUEST_SVN, policy)
    )


def recover_candidates(message_hash: bytes, r: int = SIG_R, s: int = SIG_S) -> list[tuple[int, int]]:
    """Both public keys for which (r, s) is a valid ECDSA P-384 signature of `message_hash`,
    sorted by (X, Y)."""
    x = r
    alpha = (x * x * x + _A * x + _B) % _P
    beta = pow(alpha, (_P + 1) // 4, _P)  # p = 3 mod 4
    if beta * beta % _P != alpha:
        raise ValueError("r is not the x coordinate of a curve point")
    z = int.from_bytes(message_hash, "big")
    r_inv = pow(r, -1, _N)
    zg = _neg(_mul(z, _G))
    out = []
    for y in (beta, _P - beta):
        q = _mul(r_inv, _add(_mul(s, (x, y)), zg))
        if q is not None:
            out.append(q)
    return sorted(out)


def _le72(v: int) -> bytes:
    return v.to_bytes(0x48, "little")


def id_key_bytes(qx: int, qy: int) -> bytes:
    """AMD's 0x404-byte public key format: u32 curve, QX and QY little-endian in 72 bytes each."""
    return (struct.pack("<I", CURVE_P384) + _le72(qx) + _le72(qy)).ljust(ID_KEY_SIZE, b"\0")


@functools.lru_cache(maxsize=64)
def derive_id_key(measurement: bytes, policy: int) -> bytes:
    digest = hashlib.sha384(id_block(measurement, policy)).digest()
    qx, qy = recover_candidates(digest)[0]
    return id_key_bytes(qx, qy)


def id_key_digest(measurement: bytes, policy: int) -> bytes:
    """SHA-384 of the derived ID key: the value a report's ID_KEY_DIGEST must hold."""
    return hashlib.sha384(derive_id_key(measurement, policy)).digest()


def id_auth_block(measurement: bytes, policy: int) -> bytes:
    """The 0x1000-byte ID authentication block handed to the hypervisor at launch."""
    out = bytearray(ID_AUTH_SIZE)
    struct.pack_into("<II", out, 0, 1, 0)  # ID_KEY_ALGO = ECDSA P-384, AUTH_KEY_ALGO = none
    out[0x40 : 0x40 + 0x90] = _le72(SIG_R) + _le72(SIG_S)
    out[0x240 : 0x240 + ID_KEY_SIZE] = derive_id_key(measurement, policy)
    return bytes(out)
