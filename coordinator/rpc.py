"""Method table of MeshAPI and UserAPI, shared by the servers and by clients (initializer, CLI).

grpcio's generated service stubs are not typed, so servers and clients are built from this table
with grpcio's generic handlers and ``channel.unary_unary``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]

from coordinator.proto import meshapi_pb2, userapi_pb2

MESH_SERVICE = "meshapi.MeshAPI"
USER_SERVICE = "edgelesssys.contrast.userapi.UserAPI"


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: type[Any]
    response: type[Any]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


NEW_MESH_CERT = Method(
    MESH_SERVICE, "NewMeshCert", meshapi_pb2.NewMeshCertRequest, meshapi_pb2.NewMeshCertResponse
)
MESH_RECOVER = Method(MESH_SERVICE, "Recover", meshapi_pb2.RecoverRequest, meshapi_pb2.RecoverResponse)
SET_MANIFEST = Method(
    USER_SERVICE, "SetManifest", userapi_pb2.SetManifestRequest, userapi_pb2.SetManifestResponse
)
GET_MANIFESTS = Method(
    USER_SERVICE, "GetManifests", userapi_pb2.GetManifestsRequest, userapi_pb2.GetManifestsResponse
)
USER_RECOVER = Method(USER_SERVICE, "Recover", userapi_pb2.RecoverRequest, userapi_pb2.RecoverResponse)


def call(channel: Any, method: Method, request: Any, timeout: float) -> Any:
    """One unary call; raises grpc.RpcError on failure."""
    stub = channel.unary_unary(
        method.path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=method.response.FromString,
    )
    return stub(request, timeout=timeout)


def rpc_code(error: Exception) -> Any:
    """The grpc.StatusCode of an RpcError (None for anything else)."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code()
    return None
