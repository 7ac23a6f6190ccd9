"""Hostile clients against a running Coordinator: each gets a clean error, none affects the others."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.atls import CallError, ClientConfig, call, channel, split_host_port
from attestation.atls.platforms import SNP_OID, SnpIssuer
from attestation.snp.product import Product
from attestation.testing import SimulatedAmdRoot, SimulatedSnpProvider
from coordinator import rpc, simulation
from coordinator.cli import commands
from coordinator.cli.workspace import Workspace
from coordinator.proto import meshapi_pb2, userapi_pb2
from tests.coordinator.harness import CoordinatorProcess, initdata, write_reference_values


@dataclass
class Env:
    coord: CoordinatorProcess
    ws: Workspace
    docs: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("rejections")
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTESTATION_SIMULATED_ROOT", str(tmp / "simroot"))
    docs = tmp / "docs"
    docs.mkdir()
    for name in ("coordinator", "web"):
        (docs / f"{name}.toml").write_bytes(initdata(name))
    coord = CoordinatorProcess(tmp / "state", tmp / "simroot", docs / "coordinator.toml")
    coord.start()
    ws = Workspace(tmp / "ws")
    commands.generate(ws, write_reference_values(tmp / "rv.json"), [str(docs / "web.toml")],
                      docs / "coordinator.toml", seedshare_key_bits=2048)
    commands.set_manifest(ws, coord.user, retry_for=5)
    try:
        yield Env(coord, ws, docs)
    finally:
        coord.stop()
        mp.undo()


def new_mesh_cert(env: Env, issuer: object) -> meshapi_pb2.NewMeshCertResponse:
    host, port = split_host_port(env.coord.mesh, 7777)
    return call(host, port, ClientConfig(issuer=issuer), rpc.NEW_MESH_CERT,  # type: ignore[arg-type]
                meshapi_pb2.NewMeshCertRequest(), timeout=15)


def good_issuer(env: Env, **kw: object) -> SnpIssuer:
    prov = simulation.provider(env.coord.sim_root, (env.docs / "web.toml").read_bytes())
    for k, v in kw.items():
        setattr(prov, k, v)
    return SnpIssuer(prov)


def failures(env: Env) -> float:
    _, body = env.coord.http("probes", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("contrast_meshapi_attestation_failures_total "):
            return float(line.split()[1])
    raise AssertionError("metric missing")


class ReplayIssuer:
    """Replays evidence captured from an earlier, legitimate handshake."""

    def __init__(self, inner: SnpIssuer) -> None:
        self.inner, self.captured = inner, b""

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return SNP_OID

    def issue(self, report_data: bytes) -> bytes:
        if not self.captured:
            self.captured = self.inner.issue(report_data)
        return self.captured


class GarbageIssuer:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return SNP_OID

    def issue(self, report_data: bytes) -> bytes:
        return self.payload


def expect_refused(env: Env, issuer: object) -> None:
    before = failures(env)
    with pytest.raises(CallError) as err:
        new_mesh_cert(env, issuer)
    assert err.value.code == "UNAVAILABLE" and "aTLS" in err.value.message
    assert failures(env) == before + 1
    assert new_mesh_cert(env, good_issuer(env)).CertChain  # others are unaffected


def test_wrong_measurement(env: Env) -> None:
    expect_refused(env, good_issuer(env, measurement=b"\x01" * 48))


def test_replayed_evidence(env: Env) -> None:
    replay = ReplayIssuer(good_issuer(env))
    new_mesh_cert(env, replay)  # first use binds the evidence to that handshake
    expect_refused(env, replay)


def test_foreign_chain(env: Env) -> None:
    foreign = SimulatedSnpProvider(root=SimulatedAmdRoot.generate(Product.MILAN),
                                   host_data=simulation.host_data_for((env.docs / "web.toml").read_bytes()))
    expect_refused(env, SnpIssuer(foreign))


@pytest.mark.parametrize("payload", [b"", b"\xff" * 50, b"\x0a\x05hello", b"\x0a" + b"\xff" * 10 + b"\x01"])
def test_malformed_evidence(env: Env, payload: bytes) -> None:
    expect_refused(env, GarbageIssuer(payload))


def test_unattested_client(env: Env) -> None:
    before = failures(env)
    host, port = split_host_port(env.coord.mesh, 7777)
    with pytest.raises(CallError):
        call(host, port, ClientConfig(), rpc.NEW_MESH_CERT, meshapi_pb2.NewMeshCertRequest(), timeout=15)
    assert failures(env) == before + 1


def test_oversized_request(env: Env) -> None:
    host, port = split_host_port(env.coord.mesh, 7777)
    with channel(host, port, ClientConfig(issuer=good_issuer(env))) as (ch, _fwd):
        stub = ch.unary_unary(rpc.NEW_MESH_CERT.path, request_serializer=lambda b: b,
                              response_deserializer=meshapi_pb2.NewMeshCertResponse.FromString)
        big = b"\x12" + (200_000).to_bytes(3, "big")  # never parsed: rejected on size first
        with pytest.raises(grpc.RpcError) as err:
            stub(b"\xfa\x07" + b"\x80\x9a\x0c" + b"A" * 200_000 + big[:0], timeout=15)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert new_mesh_cert(env, good_issuer(env)).CertChain


def test_stalled_handshakes_do_not_block_others(env: Env) -> None:
    host, port = split_host_port(env.coord.mesh, 7777)
    stalled = []
    for _ in range(20):
        s = socket.create_connection((host, port))
        s.sendall(b"\x16\x03\x01\x02\x00")  # a ClientHello header, then nothing
        stalled.append(s)
    try:
        results: list[object] = []

        def worker() -> None:
            results.append(new_mesh_cert(env, good_issuer(env)))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 4
    finally:
        for s in stalled:
            s.close()


def test_set_manifest_authorization(env: Env, tmp_path: Path) -> None:
    host, port = split_host_port(env.coord.user, 1313)
    raw = env.ws.path("manifest.json").read_bytes()
    policies = [env.ws.load_initdata(h) for h in commands._load_manifest(env.ws).policies]
    request = userapi_pb2.SetManifestRequest(Manifest=raw, Policies=policies)
    validators = commands.coordinator_validators(commands._load_manifest(env.ws))
    for key in (None, ec.generate_private_key(ec.SECP384R1())):
        with pytest.raises(CallError) as err:
            call(host, port, ClientConfig(validators=validators, key=key), rpc.SET_MANIFEST, request)
        assert err.value.code == "PERMISSION_DENIED"
    # Invalid manifests and missing policy documents are InvalidArgument, and change nothing.
    owner = env.ws.workload_owner_key(create=False)
    for bad in (userapi_pb2.SetManifestRequest(Manifest=b"{", Policies=policies),
                userapi_pb2.SetManifestRequest(Manifest=raw, Policies=policies[:1])):
        with pytest.raises(CallError) as err:
            call(host, port, ClientConfig(validators=validators, key=owner), rpc.SET_MANIFEST, bad)
        assert err.value.code == "INVALID_ARGUMENT"
    assert len(commands.verify(env.ws, env.coord.user).Manifests) == 1
    # Recover while active: FailedPrecondition, whoever asks.
    with pytest.raises(CallError) as err:
        call(host, port, ClientConfig(validators=validators), rpc.USER_RECOVER,
             userapi_pb2.RecoverRequest(Seed=b"\0" * 64, Salt=b"\0" * 32))
    assert err.value.code == "FAILED_PRECONDITION"


def test_wrong_coordinator_policy_is_refused_by_cli(env: Env, tmp_path: Path) -> None:
    """The CLI pins HOST_DATA to the Coordinator policy hash; a Coordinator with other initdata fails."""
    import json

    doc = json.loads(env.ws.path("manifest.json").read_bytes())
    web = next(h for h, e in doc["Policies"].items() if e.get("Role") != "coordinator")
    for entry in doc["Policies"].values():
        entry.pop("Role", None)
    doc["Policies"][web]["Role"] = "coordinator"
    other = Workspace(tmp_path / "other")
    other.write("manifest.json", json.dumps(doc).encode())
    with pytest.raises(commands.CliError, match=r"host_data is [0-9a-f]{64}, expected [0-9a-f]{64}"):
        commands.verify(other, env.coord.user)
