"""The Coordinator's gRPC method table and the generic call helpers, in one import for its own modules.

The table lives with the protos (coordinator.proto.methods) so a client such as the initializer links
only the protos and the aTLS client (attestation.atls), not the Coordinator.
"""

from __future__ import annotations

from attestation.atls import Method, rpc_code
from attestation.atls import unary_call as call
from coordinator.proto import (
    GET_MANIFESTS,
    MESH_RECOVER,
    MESH_SERVICE,
    NEW_MESH_CERT,
    SET_MANIFEST,
    USER_RECOVER,
    USER_SERVICE,
)

__all__ = [
    "GET_MANIFESTS", "MESH_RECOVER", "MESH_SERVICE", "NEW_MESH_CERT", "SET_MANIFEST", "USER_RECOVER",
    "USER_SERVICE", "Method", "call", "rpc_code",
]
