"""The Coordinator's key hierarchy: everything long-lived derives from one secret seed and a salt.

derive(secret, label) = HKDF-SHA256(IKM=secret, salt=salt, info=label), output as long as the secret.
Labels (Contrast internal/seedengine): ``POD STATE SECRET``, ``HISTORY SECRET``, ``TRANSACTION SIGNING
SECRET``, ``ROOT CA SEED``; workload secrets derive from the pod-state seed with ``WORKLOAD SECRET ID:
<id>``. The root-CA and transaction-signing keys are det-keygen P-384 keys (`keygen`).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coordinator import keygen
from coordinator.errors import SeedEngineError

SEED_SIZE = 64
SALT_SIZE = 32
MIN_SEED_SIZE = 32


class SeedEngine:
    """Derived keys and secrets; holds the seed, so never log or repr it."""

    __slots__ = (
        "_pod_state_seed",
        "_salt",
        "_seed",
        "history_seed",
        "root_ca_key",
        "transaction_signing_key",
    )

    def __init__(self, seed: bytes, salt: bytes) -> None:
        if len(seed) < MIN_SEED_SIZE:
            raise SeedEngineError(f"secret seed has {len(seed)} bytes, expected at least {MIN_SEED_SIZE}")
        if len(salt) != SALT_SIZE:
            raise SeedEngineError(f"salt has {len(salt)} bytes, expected {SALT_SIZE}")
        self._seed = bytes(seed)
        self._salt = bytes(salt)
        self._pod_state_seed = self._derive(seed, b"POD STATE SECRET")
        self.history_seed = self._derive(seed, b"HISTORY SECRET")
        self.transaction_signing_key: ec.EllipticCurvePrivateKey = keygen.p384_key(
            self._derive(seed, b"TRANSACTION SIGNING SECRET")
        )
        self.root_ca_key: ec.EllipticCurvePrivateKey = keygen.p384_key(self._derive(seed, b"ROOT CA SEED"))

    def _derive(self, secret: bytes, label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=len(secret), salt=self._salt, info=label).derive(secret)

    @property
    def seed(self) -> bytes:
        return self._seed

    @property
    def salt(self) -> bytes:
        return self._salt

    @property
    def pod_state_seed(self) -> bytes:
        return self._pod_state_seed

    def workload_secret(self, workload_secret_id: str) -> bytes:
        if not workload_secret_id:
            raise SeedEngineError("workload secret ID is empty")
        label = b"WORKLOAD SECRET ID: " + workload_secret_id.encode("utf-8")
        return self._derive(self._pod_state_seed, label)

    def __repr__(self) -> str:
        return "SeedEngine(<redacted>)"
