"""The manifest history: content-addressed manifests, policies and transitions, plus a signed
``transitions/latest`` pointer updated by compare-and-swap (Contrast internal/history).

* ``manifests/<sha256>``, ``policies/<sha256>``: raw bytes; reads re-hash and fail on mismatch.
* ``transitions/<sha256>``: ManifestHash(32) || PreviousTransitionHash(32); all-zero ends the chain.
* ``transitions/latest``: TransitionHash(32) || ASN.1 ECDSA signature over that hash used directly as
  the digest (Go's ecdsa.SignASN1 over a 32-byte hash = Prehashed(SHA256) here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from coordinator.errors import HashMismatchError, HistoryError, NotFoundError, SignatureError
from coordinator.store import FileStore

ZERO = b"\0" * 32
LATEST_KEY = "transitions/latest"
_MAX_WALK = 1_000_000


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Transition:
    manifest_hash: bytes
    previous_transition_hash: bytes

    def marshal(self) -> bytes:
        return self.manifest_hash + self.previous_transition_hash

    @classmethod
    def unmarshal(cls, data: bytes) -> Transition:
        if len(data) != 64:
            raise HistoryError(f"transition has {len(data)} bytes, expected 64")
        return cls(data[:32], data[32:])

    def digest(self) -> bytes:
        return sha256(self.marshal())


@dataclass(frozen=True)
class LatestTransition:
    transition_hash: bytes
    signature: bytes

    def marshal(self) -> bytes:
        return self.transition_hash + self.signature

    @classmethod
    def unmarshal(cls, data: bytes) -> LatestTransition:
        if len(data) <= 32:
            raise SignatureError(f"transitions/latest has {len(data)} bytes, expected hash and signature")
        return cls(data[:32], data[32:])

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> None:
        try:
            algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
            public_key.verify(self.signature, self.transition_hash, algorithm)
        except InvalidSignature as exc:
            raise SignatureError("transitions/latest signature does not verify with the signing key") from exc

    @classmethod
    def sign(cls, transition_hash: bytes, key: ec.EllipticCurvePrivateKey) -> LatestTransition:
        sig = key.sign(transition_hash, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return cls(transition_hash, sig)


class History:
    def __init__(self, store: FileStore) -> None:
        self.store = store

    def _put(self, directory: str, data: bytes) -> bytes:
        digest = sha256(data)
        key = f"{directory}/{digest.hex()}"
        if not self.store.has(key):
            self.store.set(key, data)
        return digest

    def _get(self, directory: str, digest: bytes) -> bytes:
        data = self.store.get(f"{directory}/{digest.hex()}")
        if sha256(data) != digest:
            raise HashMismatchError(f"{directory}/{digest.hex()} does not hash to its key")
        return data

    def set_manifest(self, manifest: bytes) -> bytes:
        return self._put("manifests", manifest)

    def get_manifest(self, digest: bytes) -> bytes:
        return self._get("manifests", digest)

    def set_policy(self, policy: bytes) -> bytes:
        return self._put("policies", policy)

    def get_policy(self, digest: bytes) -> bytes:
        return self._get("policies", digest)

    def set_transition(self, transition: Transition) -> bytes:
        return self._put("transitions", transition.marshal())

    def get_transition(self, digest: bytes) -> Transition:
        return Transition.unmarshal(self._get("transitions", digest))

    def has_latest(self) -> bool:
        return self.store.has(LATEST_KEY)

    def get_latest_insecure(self) -> LatestTransition:
        """The latest pointer without a signature check (to find the seedshare owners to recover)."""
        return LatestTransition.unmarshal(self.store.get(LATEST_KEY))

    def get_latest(self, public_key: ec.EllipticCurvePublicKey) -> LatestTransition:
        latest = self.get_latest_insecure()
        latest.verify(public_key)
        return latest

    def set_latest(
        self, old: LatestTransition | None, new: LatestTransition, public_key: ec.EllipticCurvePublicKey
    ) -> None:
        new.verify(public_key)
        self.store.compare_and_swap(LATEST_KEY, None if old is None else old.marshal(), new.marshal())

    def walk(self, transition_hash: bytes) -> Iterator[Transition]:
        """Transitions from `transition_hash` back to the first (newest first)."""
        seen = 0
        while transition_hash != ZERO:
            transition = self.get_transition(transition_hash)
            yield transition
            transition_hash = transition.previous_transition_hash
            seen += 1
            if seen > _MAX_WALK:
                raise HistoryError("transition chain too long or cyclic")

    def manifests(self, transition_hash: bytes) -> list[bytes]:
        """Manifest history oldest -> newest."""
        return [self.get_manifest(t.manifest_hash) for t in reversed(list(self.walk(transition_hash)))]


__all__ = ["History", "LatestTransition", "NotFoundError", "Transition"]
