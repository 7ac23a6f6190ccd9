"""Simulated TEEs for machines without one (tests, dev clusters). Never used unless asked for.

The pod-VM image leaves this package out (image/build/rootfs.py) unless the build asks for it; the
providers in ``attestation.providers`` load it only for ``detect_provider(allow_simulated=True)``.
"""

from attestation.providers.detect import SIMULATED_ROOT_ENV
from attestation.testing.roots import (
    CmdlineHostDataError,
    host_data_for,
    host_data_from_cmdline,
    load_or_create_root,
    load_root,
    load_trusted_roots,
    root_dir,
    snp_provider,
)
from attestation.testing.simulated import (
    SimulatedAmdRoot,
    SimulatedCrlSource,
    SimulatedSnpProvider,
    simulated_crl,
)
from attestation.testing.simulated_tdx import SimulatedIntelRoot, SimulatedTdxProvider

__all__ = [
    "SIMULATED_ROOT_ENV",
    "CmdlineHostDataError",
    "SimulatedAmdRoot",
    "SimulatedCrlSource",
    "SimulatedIntelRoot",
    "SimulatedSnpProvider",
    "SimulatedTdxProvider",
    "host_data_for",
    "host_data_from_cmdline",
    "load_or_create_root",
    "load_root",
    "load_trusted_roots",
    "root_dir",
    "simulated_crl",
    "snp_provider",
]
