"""The Coordinator's state machine and the operations that change it (Contrast's stateguard).

States: *no state* (nothing in the store: only the first SetManifest works), *stale* (the store has
a latest transition but this process holds no seed: only Recover works), *active*. The in-memory
state is an immutable `State` swapped under a lock; the store's ``transitions/latest`` is updated by
compare-and-swap, so a concurrent writer makes the loser fail cleanly without changing anything.
"""

from __future__ import annotations

import enum
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from coordinator import manifest as manifest_mod
from coordinator.authority import Authority, PublicKey
from coordinator.errors import (
    AlreadyRecoveredError,
    HistoryError,
    InvalidRequestError,
    LatestChangedError,
    NoStateError,
    PermissionDeniedError,
    StaleStateError,
    StateError,
    UntrustedHistoryError,
)
from coordinator.history import ZERO, History, LatestTransition, Transition, sha256
from coordinator.manifest import Manifest
from coordinator.owners import OwnerAnchor
from coordinator.recovery import verify_history
from coordinator.seedengine import SALT_SIZE, SEED_SIZE, SeedEngine

SEEDSHARE_LABEL = b"seedshare"


class Status(enum.Enum):
    NO_STATE = "no state"
    STALE = "stale"
    ACTIVE = "active"


@dataclass(frozen=True)
class SeedShare:
    public_key_hex: str
    encrypted_seed: bytes


@dataclass(frozen=True)
class State:
    engine: SeedEngine
    manifest: Manifest
    authority: Authority
    latest: LatestTransition
    generation: int


def key_digest(key: PublicKey) -> bytes:
    """SHA-256 over PKIX DER (RSA: PKCS#1 DER), as Contrast authorizes owner keys."""
    if isinstance(key, rsa.RSAPublicKey):
        return sha256(manifest_mod.pkcs1_der(key))
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256(spki)


def encrypt_seed(seed: bytes, hex_pkcs1: str) -> SeedShare:
    pub = manifest_mod.load_seedshare_key(hex_pkcs1)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=SEEDSHARE_LABEL)
    return SeedShare(hex_pkcs1, pub.encrypt(seed, oaep))


def decrypt_seed(share: bytes, key: rsa.RSAPrivateKey) -> bytes:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=SEEDSHARE_LABEL)
    return key.decrypt(share, oaep)


class Guard:
    """Owns the in-memory state; every call is atomic with respect to the others."""

    def __init__(
        self,
        history: History,
        random: Callable[[int], bytes] = os.urandom,
        mesh_key_factory: Callable[[], ec.EllipticCurvePrivateKey] | None = None,
        anchor: OwnerAnchor | None = None,
    ) -> None:
        self.history = history
        self.anchor = anchor
        self._random = random
        self._new_mesh_key = mesh_key_factory or (lambda: ec.generate_private_key(ec.SECP384R1()))
        self._lock = threading.Lock()
        self._state: State | None = None
        self.on_change: list[Callable[[State], None]] = []

    # -- reads -----------------------------------------------------------------------------------------
    def status(self) -> Status:
        if self._state is not None:
            return Status.ACTIVE
        return Status.STALE if self.history.has_latest() else Status.NO_STATE

    def state(self) -> State:
        current = self._state
        if current is not None:
            return current
        if self.history.has_latest():
            raise StaleStateError()
        raise NoStateError()

    def history_documents(self, state: State) -> tuple[list[bytes], list[bytes]]:
        """(manifests oldest -> newest, every policy document they reference)."""
        manifests = self.history.manifests(state.latest.transition_hash)
        seen: dict[str, bytes] = {}
        for raw in manifests:
            doc = manifest_mod.parse(raw)
            for policy_hash in doc.policies:
                if policy_hash not in seen:
                    try:
                        seen[policy_hash] = self.history.get_policy(bytes.fromhex(policy_hash))
                    except HistoryError:
                        continue
        return manifests, list(seen.values())

    # -- SetManifest -----------------------------------------------------------------------------------
    def set_manifest(
        self, raw: bytes, policies: Sequence[bytes], caller: PublicKey | None
    ) -> tuple[State, list[SeedShare] | None]:
        new = manifest_mod.parse(raw)
        documents = {hashlib.sha256(doc).hexdigest(): doc for doc in policies}
        for policy_hash in new.policies:
            if policy_hash not in documents:
                raise InvalidRequestError(f"policy {policy_hash} named in the manifest was not sent")
        with self._lock:
            current = self._state
            shares: list[SeedShare] | None = None
            if current is None:
                if self.history.has_latest():
                    raise StaleStateError()
                if self.anchor is not None:
                    self.anchor.check_manifest(new, "the first manifest")
                    self.anchor.check_workload_owner(None if caller is None else key_digest(caller).hex())
                seed, salt = self._random(SEED_SIZE), self._random(SALT_SIZE)
                shares = [encrypt_seed(seed, key) for key in new.seedshare_owner_pub_keys]
                engine = SeedEngine(seed, salt)
                previous, old_latest, generation = ZERO, None, 0
            else:
                self._authorize_update(current.manifest, new, caller)
                if self.anchor is not None:  # else the update would make the history unrecoverable
                    self.anchor.check_manifest(new, "the manifest update")
                engine = current.engine
                previous, old_latest, generation = (
                    current.latest.transition_hash,
                    current.latest,
                    current.generation,
                )
            for doc in documents.values():
                self.history.set_policy(doc)
            manifest_hash = self.history.set_manifest(raw)
            transition_hash = self.history.set_transition(Transition(manifest_hash, previous))
            latest = LatestTransition.sign(transition_hash, engine.transaction_signing_key)
            try:
                self.history.set_latest(old_latest, latest, engine.transaction_signing_key.public_key())
            except LatestChangedError:
                # Another replica moved the history: our in-memory state is stale (Contrast's watcher
                # does the same); only recovery brings this replica back.
                if current is not None:
                    self._state = None
                raise
            authority = Authority(engine.root_ca_key, self._new_mesh_key())
            state = State(engine, new, authority, latest, generation + 1)
            self._state = state
        for hook in self.on_change:
            hook(state)
        return state, shares

    @staticmethod
    def _authorize_update(old: Manifest, new: Manifest, caller: PublicKey | None) -> None:
        if not old.workload_owner_key_digests:
            raise PermissionDeniedError("manifest updates disabled: no workload owner key in the manifest")
        if caller is None:
            raise PermissionDeniedError("no client certificate: a workload owner key is required to update")
        digest = key_digest(caller).hex()
        if digest not in old.workload_owner_key_digests:
            raise PermissionDeniedError(f"client key {digest} is not a workload owner key of the manifest")
        if tuple(new.seedshare_owner_pub_keys) != tuple(old.seedshare_owner_pub_keys):
            raise PermissionDeniedError("SeedshareOwnerPubKeys cannot change after the first manifest")

    # -- Recover ---------------------------------------------------------------------------------------
    def persisted_manifest(self) -> tuple[LatestTransition, Manifest]:
        """The latest manifest in the store, read WITHOUT a signature check: host data, usable only to
        decide whom to ask (never to authorize anything)."""
        latest = self.history.get_latest_insecure()
        transition = self.history.get_transition(latest.transition_hash)
        return latest, manifest_mod.parse(self.history.get_manifest(transition.manifest_hash))

    def recover(
        self, seed: bytes, salt: bytes, caller: PublicKey | None, expected_transition: bytes | None = None
    ) -> State:
        """Owner recovery. The history is adopted only if the supplied seed signed it, it chains back
        intact, the caller is a seedshare owner of it (and of the measured owner anchor, if any), and it
        contains `expected_transition` (the one the owner last saw) when given."""
        if expected_transition is not None and len(expected_transition) != 32:
            raise InvalidRequestError(
                f"expected latest transition has {len(expected_transition)} bytes, expected 32")
        with self._lock:
            if self._state is not None:
                raise AlreadyRecoveredError()
            if not self.history.has_latest():
                raise StateError("no state to recover from")
            if not isinstance(caller, rsa.RSAPublicKey):
                raise PermissionDeniedError("recovery needs a seedshare owner RSA key as client key")
            caller_hex = manifest_mod.pkcs1_der(caller).hex()
            if self.anchor is not None:
                self.anchor.check_seedshare_owner(caller_hex)
            engine = self._engine(seed, salt)
            verified = verify_history(self.history, engine, self.anchor, expected_transition)
            if caller_hex not in {k.lower() for k in verified.manifest.seedshare_owner_pub_keys}:
                raise UntrustedHistoryError("the client key is not a seedshare owner of the latest manifest")
            if self.history.get_latest_insecure() != verified.latest:
                raise StateError("history changed during recovery; retry")
            authority = Authority(engine.root_ca_key, self._new_mesh_key())
            state = State(engine, verified.manifest, authority, verified.latest, verified.generation)
            self._state = state
        for hook in self.on_change:
            hook(state)
        return state

    def recover_from_peer(
        self, seed: bytes, salt: bytes, mesh_key: ec.EllipticCurvePrivateKey, peer_manifest: bytes
    ) -> State:
        """Peer recovery: the seed came from an attested peer Coordinator (same policy as this one) over
        mutual aTLS. The persisted history must verify under that seed, and its latest manifest must be
        the one the peer runs: a rolled-back or replaced store is refused. The peer's mesh CA key is taken
        over (no rotation)."""
        with self._lock:
            if self._state is not None:
                raise AlreadyRecoveredError()
            if not self.history.has_latest():
                raise StateError("no state to recover from")
            engine = self._engine(seed, salt)
            verified = verify_history(self.history, engine, self.anchor)
            if verified.manifest.raw != peer_manifest:
                raise UntrustedHistoryError(
                    "the persisted latest manifest is not the one the peer Coordinator runs (the store was "
                    "rolled back or replaced)",
                    found=f"manifest sha256 {verified.manifest.digest.hex()}",
                    expected=f"manifest sha256 {sha256(peer_manifest).hex()}",
                )
            if self.history.get_latest_insecure() != verified.latest:
                raise StateError("history changed during recovery; retry")
            authority = Authority(engine.root_ca_key, mesh_key)
            state = State(engine, verified.manifest, authority, verified.latest, verified.generation)
            self._state = state
        for hook in self.on_change:
            hook(state)
        return state

    @staticmethod
    def _engine(seed: bytes, salt: bytes) -> SeedEngine:
        try:
            return SeedEngine(seed, salt)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
