"""Simulated SEV-SNP for machines without a TEE (tests, dev clusters). Never used unless asked for.

The simulated AMD root is created once and kept in ``<dir>`` (``ark.pem``/``ask.pem`` plus keys), so
Coordinator restarts and pods on the same machine (``ATTESTATION_SIMULATED_ROOT=<dir>``) share it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.initdata import digest as initdata_digest
from attestation.initdata import platform_digest
from attestation.providers.simulated import SimulatedAmdRoot, SimulatedSnpProvider
from attestation.snp import certs
from attestation.snp.product import Product
from attestation.trust import AmdRoots
from coordinator.verifiers import SIMULATED_PLATFORM

SIMULATED_ROOT_ENV = "ATTESTATION_SIMULATED_ROOT"
# The reference values a simulated launch with the default all-zero measurement matches
# (`contrast generate --simulate-tee` writes them).
SIMULATED_SNP_REFERENCE_VALUES = {
    "snp": [{
        "Platform": SIMULATED_PLATFORM,
        "ProductName": "Milan",
        "TrustedMeasurement": "00" * 48,
        "MinimumTCB": {"BootloaderVersion": 0, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0},
        "GuestPolicy": {"ABIMinor": 0, "ABIMajor": 0, "SMT": True},
    }]
}


def load_trusted_roots(directory: Path) -> AmdRoots:
    """The trust anchors of a simulated root saved in `directory`: its ARK and ASK certificates only
    (a verifier needs no private key)."""
    return AmdRoots.from_certificates(
        [certs.load_certificate((directory / name).read_bytes()) for name in ("ark.pem", "ask.pem")]
    )


def load_root(directory: Path) -> SimulatedAmdRoot:
    """Like SimulatedAmdRoot.load, minus RSA private-key validation (~50 ms per key): the keys are our
    own files from `save`, and a broken key only breaks the simulator's own signatures."""
    ark = certs.load_certificate((directory / "ark.pem").read_bytes())
    ask = certs.load_certificate((directory / "ask.pem").read_bytes())
    keys = [
        serialization.load_pem_private_key(
            (directory / name).read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        for name in ("ark.key", "ask.key")
    ]
    ark_key, ask_key = keys
    if not isinstance(ark_key, rsa.RSAPrivateKey) or not isinstance(ask_key, rsa.RSAPrivateKey):
        raise ValueError(f"simulated root keys in {directory} must be RSA")
    _role, product = certs.role_of(ark)
    if product is None:
        raise ValueError(f"{directory}/ark.pem names no product")
    return SimulatedAmdRoot(product, ark_key, ask_key, ark, ask)


def load_or_create_root(directory: Path) -> SimulatedAmdRoot:
    if (directory / "ark.pem").exists():
        return load_root(directory)
    root = SimulatedAmdRoot.generate(Product.MILAN)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.save(directory)
    return root


def host_data_for(initdata: bytes | None) -> bytes:
    """HOST_DATA a host would set for this initdata document (zeros without one)."""
    if initdata is None:
        return bytes(32)
    return platform_digest(initdata_digest(initdata), 32)


def root_dir(default: Path) -> Path:
    """Where the simulated root lives: $ATTESTATION_SIMULATED_ROOT if set, else `default`."""
    return Path(os.environ.get(SIMULATED_ROOT_ENV) or default)


def provider(
    root_dir_default: Path, initdata: bytes | None = None, measurement: bytes = bytes(48)
) -> SimulatedSnpProvider:
    root = load_or_create_root(root_dir(root_dir_default))
    return SimulatedSnpProvider(root=root, measurement=measurement, host_data=host_data_for(initdata))
