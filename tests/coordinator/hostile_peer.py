"""The host's own VM in the peer-recovery attack: attested under the host's own policy (the host
chooses that VM's initdata), running the Coordinator with MeshAPI Recover answering any attested
caller. A genuine Coordinator never does that; the host's VM runs whatever the host likes.

    python -m tests.coordinator.hostile_peer <the Coordinator's arguments>
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from attestation.atls import Peer
from coordinator import __main__ as coordinator_main
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

if __name__ == "__main__":
    raise SystemExit(coordinator_main.main())
