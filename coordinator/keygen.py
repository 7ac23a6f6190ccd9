"""Deterministic ECDSA key generation (c2sp.org/det-keygen, as filippo.io/keygen ``ECDSA``).

HMAC_DRBG (SHA-256) instantiated with entropy = secret and personalisation ``det ECDSA key gen
P-384``; the instantiate's second update round is folded into the first generate call, whose output
(48 bytes for P-384) is the big-endian scalar. Contrast derives its root-CA and transaction-signing
keys this way, so the algorithm must match bit for bit (tests: seedengine.json vectors).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.errors import SeedEngineError

P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16
)
_MIN_SECRET = 16


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def p384_scalar(secret: bytes) -> int:
    if len(secret) < _MIN_SECRET:
        raise SeedEngineError(f"keygen secret has {len(secret)} bytes, expected at least {_MIN_SECRET}")
    pers = b"det ECDSA key gen P-384"
    k, v = b"\x00" * 32, b"\x01" * 32
    # Instantiate: one update round with the seed material (the second is folded into generate).
    k = _hmac(k, v + b"\x00" + secret + pers)
    v = _hmac(k, v)
    # First generate call with the same additional input.
    k = _hmac(k, v + b"\x01" + secret + pers)
    v = _hmac(k, v)
    out = b""
    while len(out) < 48:
        v = _hmac(k, v)
        out += v
    d = int.from_bytes(out[:48], "big")
    if not 0 < d < P384_ORDER:  # probability ~2^-190; keygen treats it as an internal error for P-384
        raise SeedEngineError("det-keygen produced an out-of-range P-384 scalar")
    return d


def p384_key(secret: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(p384_scalar(secret), ec.SECP384R1())
