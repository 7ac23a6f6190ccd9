"""The host's own VM in the peer-recovery attacks: attested under a policy and launch measurement the
host chose, running the Coordinator with MeshAPI Recover answering any attested caller and with the
owner anchor of its initdata ignored. A genuine Coordinator never does either; the host's VM runs
whatever image the host likes.

    python -m tests.coordinator.hostile_peer <the Coordinator's arguments>
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from attestation.atls import Peer
from coordinator import __main__ as coordinator_main
from coordinator import identity
from coordinator.api import MeshApi
from coordinator.errors import PermissionDeniedError
from coordinator.proto import meshapi_pb2


def _recover_for_anyone(self: MeshApi, _request: meshapi_pb2.RecoverRequest, peer: Peer | None) -> Any:
    if peer is None or peer.verdict is None:
        raise PermissionDeniedError("no evidence")
    state = self.guard.state()
    key = state.authority.mesh_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return meshapi_pb2.RecoverResponse(
        Seed=state.engine.seed, Salt=state.engine.salt, MeshCAKey=key, LatestManifest=state.manifest.raw
    )


MeshApi.recover = _recover_for_anyone  # type: ignore[method-assign]
identity.anchor_from_initdata = lambda _raw, _policy: None

if __name__ == "__main__":
    raise SystemExit(coordinator_main.main())
