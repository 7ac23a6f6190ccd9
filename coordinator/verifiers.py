"""The one place validators are built from a manifest's (already parsed) reference values.

Used for pods (MeshAPI, nothing pinned) and for *a Coordinator* (the CLI and peer recovery: HOST_DATA
pinned to the manifest's coordinator policy hash; TDX: MRCONFIGID = hash || 16 zero bytes). Entries with
Platform ``Simulated-SNP`` are checked against `simulated_roots` only, and are skipped when none are
given. Every validator gets its CRLs and TDX collateral from `revocation` and refuses evidence it has
no fresh revocation data for.
"""

from __future__ import annotations

from attestation import AmdRoots, ReferenceValues, RevocationSource
from attestation.atls import SnpValidator, TdxValidator, Validator
from coordinator.manifest import Manifest

SIMULATED_PLATFORM = "Simulated-SNP"


def validators(
    reference_values: ReferenceValues,
    *,
    simulated_roots: AmdRoots | None,
    revocation: RevocationSource | None,
    host_data: bytes | None = None,
) -> list[Validator]:
    """Validators for these reference values; `host_data` (32 bytes) pins HOST_DATA / MRCONFIGID."""
    real = [e for e in reference_values.snp if e.platform != SIMULATED_PLATFORM]
    simulated = [e for e in reference_values.snp if e.platform == SIMULATED_PLATFORM]
    out: list[Validator] = []
    if real:
        out.append(SnpValidator(real, revocation=revocation, host_data=host_data))
    if simulated and simulated_roots is not None:
        out.append(
            SnpValidator(simulated, revocation=revocation, trusted_roots=simulated_roots, host_data=host_data)
        )
    if reference_values.tdx:
        mr_config_id = None if host_data is None else host_data + bytes(16)
        out.append(TdxValidator(reference_values.tdx, revocation=revocation, mr_config_id=mr_config_id))
    return out


def coordinator_validators(
    manifest: Manifest, simulated_roots: AmdRoots | None, revocation: RevocationSource | None = None
) -> list[Validator]:
    """Validators that accept only a Coordinator running this manifest's coordinator policy."""
    pinned = bytes.fromhex(manifest.coordinator_policy_hash())
    return validators(
        manifest.reference_values, simulated_roots=simulated_roots, revocation=revocation, host_data=pinned
    )
