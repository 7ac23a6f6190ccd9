"""Simulated SEV-SNP for machines without a TEE (tests, dev clusters). Never used unless asked for.

The simulated AMD root is created once and kept in ``<dir>`` (``ark.pem``/``ask.pem`` plus keys), so
Coordinator restarts and pods on the same machine (``ATTESTATION_SIMULATED_ROOT=<dir>``) share it.
"""

from __future__ import annotations

import os
from pathlib import Path

from attestation.initdata import digest as initdata_digest
from attestation.initdata import platform_digest
from attestation.providers.simulated import SimulatedAmdRoot, SimulatedSnpProvider
from attestation.snp.product import Product

SIMULATED_ROOT_ENV = "ATTESTATION_SIMULATED_ROOT"


def load_or_create_root(directory: Path) -> SimulatedAmdRoot:
    if (directory / "ark.pem").exists():
        return SimulatedAmdRoot.load(directory)
    root = SimulatedAmdRoot.generate(Product.MILAN)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.save(directory)
    return root


def host_data_for(initdata: bytes | None) -> bytes:
    """HOST_DATA a host would set for this initdata document (zeros without one)."""
    if initdata is None:
        return bytes(32)
    return platform_digest(initdata_digest(initdata), 32)


def provider(
    root_dir: Path, initdata: bytes | None = None, measurement: bytes = bytes(48)
) -> SimulatedSnpProvider:
    root = load_or_create_root(Path(os.environ.get(SIMULATED_ROOT_ENV) or root_dir))
    return SimulatedSnpProvider(root=root, measurement=measurement, host_data=host_data_for(initdata))
