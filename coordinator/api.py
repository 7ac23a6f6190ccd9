"""MeshAPI and UserAPI handlers (thin) and the one place that maps our errors to gRPC status codes.

Handlers run in grpcio's thread pool behind the aTLS terminator; the caller's verified identity
comes from the terminator's `PeerRegistry` (looked up by loopback source port, fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization

from attestation.atls import Peer, PeerRegistry, UnknownPeerError
from coordinator import rpc
from coordinator.authority import pem
from coordinator.errors import (
    CoordinatorError,
    HistoryError,
    InvalidRequestError,
    LatestChangedError,
    ManifestError,
    PermissionDeniedError,
    SeedEngineError,
    StateError,
)
from coordinator.manifest import ROLE_COORDINATOR
from coordinator.metrics import CoordinatorMetrics
from coordinator.proto import meshapi_pb2, userapi_pb2
from coordinator.state import Guard

log = logging.getLogger("coordinator.api")

Handler = Callable[[Any, Peer | None], Any]


def status_for(exc: Exception) -> tuple[Any, str]:
    """(grpc.StatusCode, message) for an exception raised by a handler."""
    if isinstance(exc, PermissionDeniedError | UnknownPeerError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, LatestChangedError | StateError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ManifestError | InvalidRequestError | SeedEngineError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, HistoryError):
        return grpc.StatusCode.INTERNAL, f"history store: {exc}"
    return grpc.StatusCode.INTERNAL, "internal error"


def _unary(
    method: rpc.Method, handler: Handler, registry: PeerRegistry, metrics: CoordinatorMetrics, need_peer: bool
) -> Any:
    def behaviour(request: Any, context: Any) -> Any:
        code = grpc.StatusCode.OK
        try:
            try:
                peer: Peer | None = registry.lookup(context.peer())
            except UnknownPeerError:
                if need_peer:
                    raise
                peer = None
            return handler(request, peer)
        except (CoordinatorError, UnknownPeerError) as exc:
            code, message = status_for(exc)
            log.info("event=rpc_failed method=%s code=%s error=%r", method.path, code.name, message)
        except Exception:
            code, message = grpc.StatusCode.INTERNAL, "internal error"
            log.exception("event=rpc_internal_error method=%s", method.path)
        finally:
            metrics.handled.inc(
                grpc_code=_code_name(code),
                grpc_method=method.name,
                grpc_service=method.service,
                grpc_type="unary",
            )
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=method.request.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


def _code_name(code: Any) -> str:
    return "".join(part.capitalize() for part in code.name.split("_")) if code.name != "OK" else "OK"


class MeshApi:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def new_mesh_cert(self, _request: meshapi_pb2.NewMeshCertRequest, peer: Peer | None) -> Any:
        if peer is None or peer.verdict is None:
            raise PermissionDeniedError("peer presented no validated attestation evidence")
        state = self.guard.state()
        entry = state.manifest.policy(peer.verdict.host_data)
        if entry is None:
            raise PermissionDeniedError(f"policy hash {peer.verdict.host_data.hex()} not found in manifest")
        public_key = peer.certificate.public_key()
        leaf = state.authority.issue_mesh_cert(
            public_key,  # type: ignore[arg-type]
            entry.sans,
            peer.verdict.claims,
            entry.workload_secret_id,
        )
        response = meshapi_pb2.NewMeshCertResponse(
            MeshCACert=state.authority.mesh_ca_pem,
            CertChain=pem(leaf) + state.authority.intermediate_pem,
            RootCACert=state.authority.root_pem,
        )
        if entry.workload_secret_id:
            response.WorkloadSecret = state.engine.workload_secret(entry.workload_secret_id)
        return response

    def recover(self, _request: meshapi_pb2.RecoverRequest, peer: Peer | None) -> Any:
        if peer is None or peer.verdict is None:
            raise PermissionDeniedError("peer presented no validated attestation evidence")
        state = self.guard.state()
        entry = state.manifest.policy(peer.verdict.host_data)
        if entry is None or entry.role != ROLE_COORDINATOR:
            raise PermissionDeniedError("only a peer Coordinator (policy role coordinator) may recover")
        key = state.authority.mesh_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return meshapi_pb2.RecoverResponse(
            Seed=state.engine.seed, Salt=state.engine.salt, MeshCAKey=key, LatestManifest=state.manifest.raw
        )

    def handler(self, registry: PeerRegistry, metrics: CoordinatorMetrics) -> Any:
        return grpc.method_handlers_generic_handler(
            rpc.MESH_SERVICE,
            {
                "NewMeshCert": _unary(rpc.NEW_MESH_CERT, self.new_mesh_cert, registry, metrics, True),
                "Recover": _unary(rpc.MESH_RECOVER, self.recover, registry, metrics, True),
            },
        )


class UserApi:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def set_manifest(self, request: userapi_pb2.SetManifestRequest, peer: Peer | None) -> Any:
        caller = peer.certificate.public_key() if peer is not None else None
        state, shares = self.guard.set_manifest(
            request.Manifest, list(request.Policies), caller  # type: ignore[arg-type]
        )
        authority = state.authority
        response = userapi_pb2.SetManifestResponse(RootCA=authority.root_pem, MeshCA=authority.mesh_ca_pem)
        if shares is not None:
            doc = response.SeedSharesDoc
            doc.salt = state.engine.salt
            for share in shares:
                doc.SeedShares.add(PublicKey=share.public_key_hex, EncryptedSeed=share.encrypted_seed)
        digest = state.manifest.digest.hex()
        log.info("event=manifest_set generation=%d manifest_sha256=%s", state.generation, digest)
        return response

    def get_manifests(self, _request: userapi_pb2.GetManifestsRequest, _peer: Peer | None) -> Any:
        state = self.guard.state()
        manifests, policies = self.guard.history_documents(state)
        return userapi_pb2.GetManifestsResponse(
            Manifests=manifests,
            Policies=policies,
            RootCA=state.authority.root_pem,
            MeshCA=state.authority.mesh_ca_pem,
            LatestTransition=userapi_pb2.LatestTransition(
                TransitionHash=state.latest.transition_hash, Signature=state.latest.signature
            ),
        )

    def recover(self, request: userapi_pb2.RecoverRequest, peer: Peer | None) -> Any:
        caller = peer.certificate.public_key() if peer is not None else None
        expected = request.ExpectedLatestTransition or None
        state = self.guard.recover(request.Seed, request.Salt, caller, expected)  # type: ignore[arg-type]
        log.info("event=recovered generation=%d", state.generation)
        return userapi_pb2.RecoverResponse()

    def handler(self, registry: PeerRegistry, metrics: CoordinatorMetrics) -> Any:
        return grpc.method_handlers_generic_handler(
            rpc.USER_SERVICE,
            {
                "SetManifest": _unary(rpc.SET_MANIFEST, self.set_manifest, registry, metrics, False),
                "GetManifests": _unary(rpc.GET_MANIFESTS, self.get_manifests, registry, metrics, False),
                "Recover": _unary(rpc.USER_RECOVER, self.recover, registry, metrics, False),
            },
        )
