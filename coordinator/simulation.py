"""Simulated SEV-SNP for the Coordinator on machines without a TEE (tests, dev clusters). Never used unless
asked for. The simulator and its shared on-disk root are attestation.testing; this adds the reference
values a simulated launch matches.
"""

from __future__ import annotations

from attestation.testing import (
    SIMULATED_ROOT_ENV,
    host_data_for,
    host_data_from_cmdline,
    load_or_create_root,
    load_root,
    load_trusted_roots,
    root_dir,
)
from attestation.testing import snp_provider as provider
from coordinator.verifiers import SIMULATED_PLATFORM

__all__ = [
    "SIMULATED_ROOT_ENV", "SIMULATED_SNP_REFERENCE_VALUES", "host_data_for", "host_data_from_cmdline",
    "load_or_create_root",
    "load_root", "load_trusted_roots", "provider", "root_dir",
]

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
