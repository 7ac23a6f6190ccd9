"""Wires the Coordinator together: state guard, gRPC backends behind aTLS terminators, HTTP servers.

    UserAPI  :1313  aTLS, server attests, client cert optional (owner keys)   -> grpcio on 127.0.0.1
    MeshAPI  :7777  aTLS, mutual; validators rebuilt per handshake from the current manifest
    HTTP     :1314  POST /attest
    probes   :9102  /probe/startup, /probe/liveness, /probe/readiness, /metrics
    transit  :8200  mTLS (mesh certs), Vault-compatible encrypt/decrypt
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hashlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from attestation import AmdRoots, RevocationSource
from attestation.atls import (
    Issuer,
    PeerRegistry,
    ServerConfig,
    Terminator,
    Validator,
)
from common.http import HttpError, HttpServer, Request, Response, Route
from coordinator import identity, peerrecovery, verifiers
from coordinator.api import MeshApi, UserApi
from coordinator.errors import StateError
from coordinator.history import History
from coordinator.metrics import CoordinatorMetrics
from coordinator.state import Guard, State, Status
from coordinator.store import FileStore
from coordinator.transitapi import TransitApi

log = logging.getLogger("coordinator")

# Reference-value entries with Platform SIMULATED_PLATFORM are checked against the simulated AMD root,
# and only when the Coordinator runs with --simulate-tee. Real entries always use the bundled AMD roots.
USER_MAX_MESSAGE = 16 * 1024 * 1024
MESH_MAX_MESSAGE = 64 * 1024
ATTEST_MAX_BODY = 1024
COLLATERAL_REFRESH_INTERVAL = 300.0


@dataclass
class Ports:
    user: int = 1313
    mesh: int = 7777
    http: int = 1314
    probes: int = 9102
    transit: int = 8200


@dataclass
class Config:
    state_dir: Path
    issuer: Issuer
    listen_host: str = "0.0.0.0"  # noqa: S104 - the Coordinator serves the cluster
    ports: Ports = field(default_factory=Ports)
    simulated_roots: AmdRoots | None = None
    # CRLs and TDX collateral for every validator; None refuses all evidence (fail closed).
    revocation: RevocationSource | None = None
    handshake_timeout: float = 25.0
    peers: tuple[str, ...] = ()
    # This Coordinator's own initdata document; its owner entry anchors who may set and recover.
    initdata: bytes | None = None


def attest_report_data(
    nonce: bytes, transition_hash: bytes, root_pem: bytes, mesh_pem: bytes, capabilities_digest: bytes = b""
) -> bytes:
    """/attest report data: SHA-256(nonce || transition || SHA-256(root) || SHA-256(mesh) [|| caps]) || 0^32.

    The transition hash goes in raw (not hashed again); the capabilities digest exists only in the
    2026 versioned API and is empty for the legacy endpoint served here.
    """
    digest = hashlib.sha256(
        nonce + transition_hash + hashlib.sha256(root_pem).digest() + hashlib.sha256(mesh_pem).digest()
        + capabilities_digest
    ).digest()
    return digest + bytes(32)


def mesh_validators(
    state: State, simulated_roots: AmdRoots | None, revocation: RevocationSource | None = None
) -> list[Validator]:
    """Validators for pods, from the current manifest's reference values (parsed with the manifest)."""
    return verifiers.validators(
        state.manifest.reference_values, simulated_roots=simulated_roots, revocation=revocation
    )


class Coordinator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = CoordinatorMetrics()
        # Who may recover comes from the hardware (own evidence, measured initdata), never from the disk.
        self.own = identity.own_identity(config.issuer)
        anchor = None if config.initdata is None else identity.anchor_from_initdata(config.initdata,
                                                                                     self.own.policy_hash)
        if anchor is None:
            log.warning("event=no_owner_anchor policy=%s hint=%r", self.own.policy_hash.hex(),
                        "the initdata names no owners: the first manifest's owner keys are taken on trust")
        self.guard = Guard(History(FileStore(config.state_dir / "history")), anchor=anchor)
        self.guard.on_change.append(lambda s: self.metrics.manifest_generation.set(s.generation))
        self.started = False
        self._grpc: list[Any] = []
        self._servers: list[Terminator | HttpServer] = []
        self.user_registry = PeerRegistry()
        self.mesh_registry = PeerRegistry()
        self.ports = Ports(**vars(config.ports))
        self.backend_ports: dict[str, int] = {}
        self._validators: tuple[State, list[Validator]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- aTLS configs per handshake ----------------------------------------------------------------------
    def _user_config(self) -> ServerConfig:
        return ServerConfig(issuer=self.config.issuer, validators=None)

    def _mesh_config(self) -> ServerConfig:
        try:
            state = self.guard.state()
        except StateError as exc:
            log.info("event=mesh_handshake_without_manifest reason=%r", str(exc))
            return ServerConfig(issuer=self.config.issuer, validators=[])
        cached = self._validators
        if cached is None or cached[0] is not state:  # rebuilt whenever the state object changes
            cached = (state, mesh_validators(state, self.config.simulated_roots, self.config.revocation))
            self._validators = cached
        return ServerConfig(issuer=self.config.issuer, validators=cached[1])

    def _attestation_failed(self, _exc: Exception) -> None:
        self.metrics.attestation_failures.inc()

    # -- lifecycle -------------------------------------------------------------------------------------
    def _grpc_backend(self, handler: Any, max_message: int) -> int:
        server = grpc.server(
            ThreadPoolExecutor(max_workers=8),
            handlers=[handler],
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_time_ms", 15000),
            ],
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc.append(server)
        return int(port)

    async def start(self) -> None:
        host, ports = self.config.listen_host, self.ports
        user_handler = UserApi(self.guard).handler(self.user_registry, self.metrics)
        mesh_handler = MeshApi(self.guard).handler(self.mesh_registry, self.metrics)
        user_backend = self._grpc_backend(user_handler, USER_MAX_MESSAGE)
        mesh_backend = self._grpc_backend(mesh_handler, MESH_MAX_MESSAGE)
        self.backend_ports = {"user": user_backend, "mesh": mesh_backend}
        timeout = self.config.handshake_timeout
        user = Terminator(
            host, ports.user, user_backend, self._user_config, self.user_registry, timeout, name="userapi"
        )
        mesh = Terminator(
            host, ports.mesh, mesh_backend, self._mesh_config, self.mesh_registry, timeout,
            on_failure=self._attestation_failed, name="meshapi",
        )
        attest_route = Route("POST", self._attest, ATTEST_MAX_BODY)
        attest = HttpServer(host, ports.http, {"/attest": attest_route, "/verify": attest_route}, "attest")
        probes = HttpServer(host, ports.probes, {
            "/probe/startup": Route("GET", self._probe_started),
            "/probe/liveness": Route("GET", self._probe_started),
            "/probe/readiness": Route("GET", self._probe_ready),
            "/metrics": Route("GET", self._metrics),
        }, "probes")
        transit_api = TransitApi(self.guard)
        transit_ssl = transit_api.ssl_context()
        transit = HttpServer(host, ports.transit, transit_api.routes(), "transit", ssl=transit_ssl)
        for server in (user, mesh, attest, probes, transit):
            await server.start()
            self._servers.append(server)
        ports.user, ports.mesh, ports.http, ports.probes = user.port, mesh.port, attest.port, probes.port
        ports.transit = transit.port
        refresh = getattr(self.config.revocation, "refresh", None)
        if refresh is not None:
            self._tasks.append(asyncio.create_task(self._refresh_collateral(refresh)))
        if self.config.peers:
            # Startup waits for one attempt, as Contrast's startup probe waits for the first recovery.
            await asyncio.to_thread(
                peerrecovery.recover_once, self.guard, self.config.issuer, self.config.peers,
                self.config.simulated_roots, self.own, self.config.revocation,
            )
            self._tasks.append(asyncio.create_task(peerrecovery.run(
                self.guard, self.config.issuer, self.config.peers, self.config.simulated_roots,
                self.own, self.config.revocation)))
        self.started = True
        log.info(
            "event=started status=%s userapi=%d meshapi=%d http=%d probes=%d state_dir=%s",
            self.guard.status().value, ports.user, ports.mesh, ports.http, ports.probes,
            self.config.state_dir,
        )

    async def _refresh_collateral(self, refresh: Callable[[datetime.datetime], list[str]]) -> None:
        """Keep fetched CRLs / TDX collateral fresh in the background, so a handshake waits for KDS/PCS
        only the first time it needs a document (or when a refresh kept failing)."""
        while True:
            await asyncio.sleep(COLLATERAL_REFRESH_INTERVAL)
            await asyncio.to_thread(refresh, datetime.datetime.now(datetime.UTC))

    async def stop(self) -> None:
        self.started = False
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for server in self._servers:
            await server.close()
        for g in self._grpc:
            g.stop(grace=None)
        self._servers.clear()
        self._grpc.clear()

    # -- HTTP handlers -----------------------------------------------------------------------------------
    async def _attest(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype != "application/json":
            raise HttpError(415, "Content-Type must be application/json")
        try:
            doc = json.loads(request.body)
            nonce = base64.b64decode(doc["nonce"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise HttpError(400, "body must be {\"nonce\": <base64 of 32 bytes>}") from exc
        if len(nonce) != 32:
            raise HttpError(400, f"nonce has {len(nonce)} bytes, expected 32")
        try:
            state = self.guard.state()
        except StateError as exc:
            raise HttpError(412, str(exc)) from exc
        manifests, policies = await asyncio.to_thread(self.guard.history_documents, state)
        root, mesh = state.authority.root_pem, state.authority.mesh_ca_pem
        report_data = attest_report_data(nonce, state.latest.transition_hash, root, mesh)
        evidence = await asyncio.to_thread(self.config.issuer.issue, report_data)
        body = {
            "raw_attestation_doc": _b64(evidence),
            "manifests": [_b64(m) for m in manifests],
            "policies": [_b64(p) for p in policies],
            "root_ca": _b64(root),
            "mesh_ca": _b64(mesh),
            "attestation_type": [int(x) for x in self.config.issuer.oid.dotted_string.split(".")],
        }
        return Response(200, json.dumps(body).encode())

    async def _probe_started(self, _request: Request) -> Response:
        return Response(200 if self.started else 503, b"", "text/plain")

    async def _probe_ready(self, _request: Request) -> Response:
        ready = self.started and self.guard.status() is Status.ACTIVE
        return Response(200 if ready else 503, self.guard.status().value.encode(), "text/plain")

    async def _metrics(self, _request: Request) -> Response:
        return Response(200, self.metrics.registry.render().encode(), "text/plain; version=0.0.4")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
