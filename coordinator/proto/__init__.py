"""The Coordinator's gRPC APIs: the generated MeshAPI/UserAPI protobuf modules and their method table.

A client (the initializer, the data-owner CLI) links only this package and attestation.atls, not the
Coordinator itself.
"""

from coordinator.proto import meshapi_pb2, userapi_pb2
from coordinator.proto.methods import (
    GET_MANIFESTS,
    MESH_RECOVER,
    MESH_SERVICE,
    NEW_MESH_CERT,
    SET_MANIFEST,
    USER_RECOVER,
    USER_SERVICE,
)

__all__ = [
    "GET_MANIFESTS",
    "MESH_RECOVER",
    "MESH_SERVICE",
    "NEW_MESH_CERT",
    "SET_MANIFEST",
    "USER_RECOVER",
    "USER_SERVICE",
    "meshapi_pb2",
    "userapi_pb2",
]
