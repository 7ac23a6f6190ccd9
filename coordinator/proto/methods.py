"""Method table of MeshAPI and UserAPI, shared by the servers and by clients (initializer, CLI)."""

from __future__ import annotations

from attestation.atls import Method
from coordinator.proto import meshapi_pb2, userapi_pb2

MESH_SERVICE = "meshapi.MeshAPI"
USER_SERVICE = "edgelesssys.contrast.userapi.UserAPI"

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
