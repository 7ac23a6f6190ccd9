"""Workspace files of the CLI (Contrast's names) and key handling."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.files import atomic_write

MANIFEST = "manifest.json"
WORKLOAD_OWNER_KEY = "workload-owner.pem"
SEEDSHARE_OWNER_KEY = "seedshare-owner.pem"
SEED_SHARES = "seed-shares.json"
ROOT_CA = "coordinator-root-ca.pem"
MESH_CA = "mesh-ca.pem"
VERIFY_DIR = "verify"
INITDATA_DIR = "initdata"
# Not a Contrast file: hex of the latest transition hash this workspace set or verified, so that a
# Coordinator whose history was rolled back behind it is noticed (recover, verify, set).
LATEST_TRANSITION = "latest-transition"
COLLATERAL_CACHE = "collateral-cache"  # fetched CRLs / TDX collateral (signed documents, re-verified on use)


_Key = TypeVar("_Key", ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)

class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, data: bytes, mode: int = 0o644) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=mode)
        return path

    # -- keys ----------------------------------------------------------------------------------------
    def workload_owner_key(self, create: bool) -> ec.EllipticCurvePrivateKey | None:
        return self._owner_key(WORKLOAD_OWNER_KEY, create, ec.EllipticCurvePrivateKey, "an ECDSA",
                               lambda: ec.generate_private_key(ec.SECP384R1()))

    def seedshare_owner_key(self, create: bool, bits: int = 4096) -> rsa.RSAPrivateKey | None:
        return self._owner_key(SEEDSHARE_OWNER_KEY, create, rsa.RSAPrivateKey, "an RSA",
                               lambda: rsa.generate_private_key(public_exponent=65537, key_size=bits))

    def _owner_key(self, name: str, create: bool, kind: type, what: str,
                   generate: Callable[[], _Key]) -> _Key | None:
        """The key in ``name``; without one, None, or (``create``) a new key written with mode 0600."""
        path = self.path(name)
        if not path.exists():
            if not create:
                return None
            key = generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            self.write(name, pem, 0o600)
            return key
        key_obj = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key_obj, kind):
            raise ValueError(f"{path} is not {what} private key")
        return cast(_Key, key_obj)

    # -- documents -------------------------------------------------------------------------------------
    def store_initdata(self, raw: bytes) -> str:
        digest = hashlib.sha256(raw).hexdigest()
        self.write(f"{INITDATA_DIR}/{digest}.toml", raw)
        return digest

    def load_initdata(self, digest: str) -> bytes:
        path = self.path(f"{INITDATA_DIR}/{digest}.toml")
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise ValueError(f"initdata for policy {digest} not found at {path}; run generate again") from exc
        if hashlib.sha256(raw).hexdigest() != digest:
            raise ValueError(f"{path} does not hash to {digest}")
        return raw

    def last_transition(self) -> bytes | None:
        """The latest transition hash this workspace last set or verified, or None if it never did."""
        path = self.path(LATEST_TRANSITION)
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            value = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"{path} is not hex") from exc
        if len(value) != 32:
            raise ValueError(f"{path} holds {len(value)} bytes, expected a 32-byte transition hash")
        return value

    def record_transition(self, transition_hash: bytes) -> None:
        self.write(LATEST_TRANSITION, transition_hash.hex().encode() + b"\n")

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_bytes())


def workspace_from(path: str | os.PathLike[str]) -> Workspace:
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)
