"""Vault-compatible transit-engine ciphertexts (Contrast's auto-unseal API format), pure functions.

ciphertext = ``vault:v<key_version>:`` + base64std(nonce(12) || AES-256-GCM ciphertext || tag(16)).
The key for (name, version) is the first 32 bytes of the workload secret for ID ``<version>_<name>``,
so it derives from the Coordinator's seed and survives recovery. The mTLS endpoint on port 8200 that
serves this is coordinator/transitapi.py.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coordinator.errors import InvalidRequestError
from coordinator.seedengine import SeedEngine

NONCE_SIZE = 12
_VERSION = re.compile(r"^v(\d+)$")
MAX_KEY_VERSION = 2**32 - 1


def derive_key(engine: SeedEngine, name: str, key_version: int) -> bytes:
    if not name or "/" in name:
        raise InvalidRequestError(f"invalid transit key name {name!r}")
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise InvalidRequestError(f"key version {key_version} is not a uint32")
    return engine.workload_secret(f"{key_version}_{name}")[:32]


def encrypt(
    key: bytes, plaintext: bytes, associated_data: bytes, key_version: int, nonce: bytes | None = None
) -> str:
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise InvalidRequestError(f"nonce has {len(nonce)} bytes, expected {NONCE_SIZE}")
    sealed = AESGCM(key).encrypt(nonce, plaintext, associated_data or None)
    return f"vault:v{key_version}:" + base64.b64encode(nonce + sealed).decode()


def parse(ciphertext: str) -> tuple[int, bytes]:
    """(key version, nonce || sealed) from a ``vault:vN:...`` string."""
    parts = ciphertext.split(":", 2)
    if len(parts) != 3 or parts[0] != "vault":
        raise InvalidRequestError("ciphertext must look like vault:v<N>:<base64>")
    m = _VERSION.match(parts[1])
    if not m or int(m.group(1)) > MAX_KEY_VERSION:
        raise InvalidRequestError(f"ciphertext key version {parts[1][:20]!r} is not v<uint32>")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("ciphertext payload is not base64") from exc
    if len(blob) < NONCE_SIZE + 16:
        raise InvalidRequestError("ciphertext payload is too short")
    return int(m.group(1)), blob


def decrypt(key: bytes, ciphertext: str, associated_data: bytes) -> bytes:
    _version, blob = parse(ciphertext)
    try:
        return AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated_data or None)
    except InvalidTag as exc:
        raise InvalidRequestError("ciphertext does not authenticate (wrong key or associated data)") from exc
