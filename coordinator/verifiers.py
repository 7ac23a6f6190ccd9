"""Validators that check *a Coordinator* (used by the CLI and by peer recovery).

HOST_DATA is pinned to the manifest's coordinator policy hash (TDX: MRCONFIGID = hash || 16 zero
bytes). Entries with Platform ``Simulated-SNP`` are checked against `simulated_roots` only, and are
skipped when none are given.
"""

from __future__ import annotations

from attestation.atls import Validator
from attestation.atls.platforms import SnpValidator
from attestation.atls.tdx import TdxValidator
from attestation.reference_values import ReferenceValues
from attestation.trust import AmdRoots
from coordinator.manifest import Manifest

SIMULATED_PLATFORM = "Simulated-SNP"


def coordinator_validators(manifest: Manifest, simulated_roots: AmdRoots | None) -> list[Validator]:
    """Raises attestation's ReferenceValuesError on malformed reference values."""
    pinned = bytes.fromhex(manifest.coordinator_policy_hash())
    real = [e for e in manifest.snp if e.get("Platform") != SIMULATED_PLATFORM]
    simulated = [e for e in manifest.snp if e.get("Platform") == SIMULATED_PLATFORM]
    out: list[Validator] = []
    if real:
        out.append(SnpValidator(ReferenceValues.from_obj({"snp": real}).snp, host_data=pinned))
    if simulated and simulated_roots is not None:
        entries = ReferenceValues.from_obj({"snp": simulated}).snp
        out.append(SnpValidator(entries, trusted_roots=simulated_roots, host_data=pinned))
    if manifest.tdx:
        tdx = ReferenceValues.from_obj({"tdx": list(manifest.tdx)}).tdx
        out.append(TdxValidator(tdx, mr_config_id=pinned + bytes(16)))
    return out
