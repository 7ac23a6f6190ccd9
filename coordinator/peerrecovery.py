"""Peer recovery: a stale Coordinator gets the seed and mesh CA key from an attested peer.

Contrast discovers peers through Kubernetes; here peers are given explicitly (``--peer HOST:PORT``,
repeatable) and share the history store (the same state directory). While stale, the Coordinator
tries every peer at startup and then every 15 s. The persisted manifest is host data, so it only
supplies the reference values: the peer must run *this* Coordinator's own policy and launch
measurement (both from our own evidence, `SameLaunchValidator`), and a persisted manifest whose
coordinator policy is another one is refused outright.
The call is ``MeshAPI.Recover`` over mutual aTLS presenting our own evidence; the seed is accepted only
if the persisted history verifies under it and its latest manifest is the one the peer runs
(`Guard.recover_from_peer`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation import AmdRoots, AttestationError, RevocationSource
from attestation.atls import CallError, ClientConfig, Issuer, Validator, call, split_host_port
from coordinator import rpc, verifiers
from coordinator.errors import CoordinatorError, UntrustedHistoryError
from coordinator.identity import LaunchIdentity, SameLaunchValidator
from coordinator.proto import meshapi_pb2
from coordinator.state import Guard, Status

log = logging.getLogger("coordinator.peerrecovery")
INTERVAL = 15.0
MESH_PORT = 7777


def recover_once(
    guard: Guard, issuer: Issuer, peers: Sequence[str], simulated_roots: AmdRoots | None, own: LaunchIdentity,
    revocation: RevocationSource | None = None,
) -> bool:
    """One attempt over all peers; True once this Coordinator is active."""
    if guard.status() is not Status.STALE:
        return guard.status() is Status.ACTIVE
    try:
        _latest, manifest = guard.persisted_manifest()
        if manifest.coordinator_policy_hash() != own.policy_hash.hex():
            raise UntrustedHistoryError(
                "the persisted manifest names another Coordinator policy; a peer must run this one",
                found=manifest.coordinator_policy_hash(), expected=own.policy_hash.hex())
        # The reference values are the host's; the peer must be a replica of us whatever they allow.
        validators: list[Validator] = [
            SameLaunchValidator(v, own)
            for v in verifiers.coordinator_validators(manifest, simulated_roots, revocation)
        ]
    except (CoordinatorError, AttestationError) as exc:
        log.warning("event=peer_recovery_impossible error=%r", str(exc))
        return False
    for peer in peers:
        host, port = split_host_port(peer, MESH_PORT)
        try:
            resp = call(host, port, ClientConfig(issuer=issuer, validators=validators), rpc.MESH_RECOVER,
                        meshapi_pb2.RecoverRequest(), 15)
            key = serialization.load_pem_private_key(resp.MeshCAKey, None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CoordinatorError("peer sent a mesh CA key that is not ECDSA")
            state = guard.recover_from_peer(resp.Seed, resp.Salt, key, resp.LatestManifest)
        except (CallError, CoordinatorError, ValueError) as exc:
            log.warning("event=peer_recovery_failed peer=%s error=%r", peer, str(exc))
            continue
        log.info("event=peer_recovered peer=%s generation=%d", peer, state.generation)
        return True
    return False


async def run(
    guard: Guard, issuer: Issuer, peers: Sequence[str], simulated_roots: AmdRoots | None, own: LaunchIdentity,
    revocation: RevocationSource | None = None,
) -> None:
    while True:
        if guard.status() is Status.STALE:
            await asyncio.to_thread(recover_once, guard, issuer, peers, simulated_roots, own, revocation)
        await asyncio.sleep(INTERVAL)
