"""End to end on loopback with the simulated SNP provider (the scenario of issue 8).

Coordinator up -> CLI set -> two initializers get certificates -> chains to mesh CA and root CA ->
an unlisted pod gets PermissionDenied -> a manifest update rotates the mesh CA -> restart: recovery
needed -> recover -> the root CA still verifies, the old mesh CA does not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from attestation.atls import CallError, ClientConfig, call, split_host_port
from attestation.atls.platforms import SnpIssuer
from coordinator import rpc, simulation
from coordinator.cli import commands
from coordinator.cli.workspace import Workspace
from coordinator.proto import meshapi_pb2
from coordinator.server import attest_report_data
from initializer.run import Settings, run
from tests.coordinator.harness import CoordinatorProcess, initdata, write_reference_values
from tests.coordinator.vectors import load


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[CoordinatorProcess, Workspace, Path]]:
    sim_root = tmp_path / "simroot"
    monkeypatch.setenv("ATTESTATION_SIMULATED_ROOT", str(sim_root))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("coordinator", "web", "db", "intruder"):
        (docs / f"{name}.toml").write_bytes(initdata(name))
    coord = CoordinatorProcess(tmp_path / "state", sim_root, docs / "coordinator.toml")
    coord.start()
    try:
        yield coord, Workspace(tmp_path / "ws"), docs
    finally:
        coord.stop()


def run_initializer(coord: CoordinatorProcess, docs: Path, name: str, out: Path) -> dict[str, float]:
    settings = Settings(
        out_dir=out / "contrast", done_file=out / "done", simulate_tee=True,
        simulate_initdata=docs / f"{name}.toml", retry_interval=0.2,
        environ={"COORDINATOR_HOST": coord.mesh, "ATTESTATION_SIMULATED_ROOT": str(coord.sim_root)},
    )
    return run(settings, threading.Event())


def load_pems(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def verify_chain(
    leaf: x509.Certificate, roots: list[x509.Certificate], inter: list[x509.Certificate]
) -> None:
    PolicyBuilder().store(Store(roots)).build_client_verifier().verify(leaf, inter)


def mesh_call(coord: CoordinatorProcess, docs: Path, name: str) -> meshapi_pb2.NewMeshCertResponse:
    provider = simulation.provider(coord.sim_root, (docs / f"{name}.toml").read_bytes())
    host, port = split_host_port(coord.mesh, 7777)
    config = ClientConfig(issuer=SnpIssuer(provider))
    return call(host, port, config, rpc.NEW_MESH_CERT, meshapi_pb2.NewMeshCertRequest())


def test_end_to_end(env: tuple[CoordinatorProcess, Workspace, Path], tmp_path: Path) -> None:
    coord, ws, docs = env
    rv = write_reference_values(tmp_path / "rv.json")
    assert coord.http("probes", "/probe/readiness")[0] == 503
    missing = commands.generate(ws, rv, [str(docs / "web.toml"), str(docs / "db.toml")],
                                docs / "coordinator.toml", seedshare_key_bits=2048)
    assert missing == []
    commands.set_manifest(ws, coord.user, retry_for=5)
    assert coord.http("probes", "/probe/readiness")[0] == 200
    verified = commands.verify(ws, coord.user)
    assert (ws.path("verify") / "manifest.0.json").read_bytes() == ws.path("manifest.json").read_bytes()
    assert len(verified.Policies) == 3
    root_ca = load_pems(ws.path("coordinator-root-ca.pem").read_bytes())[0]
    mesh_ca_v1 = load_pems(ws.path("mesh-ca.pem").read_bytes())[0]

    # Two pods get their mesh identity.
    leaves = {}
    for name in ("web", "db"):
        timings = run_initializer(coord, docs, name, tmp_path / name)
        out = tmp_path / name / "contrast"
        modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
        assert modes == {
            "tls-config": 0o755, "secrets": 0o755, "tls-config/mesh-ca.pem": 0o444,
            "tls-config/certChain.pem": 0o444, "tls-config/key.pem": 0o400,
            "tls-config/coordinator-root-ca.pem": 0o444, "secrets/workload-secret-seed": 0o400,
        }
        assert (tmp_path / name / "done").read_bytes() == b""
        secret = (out / "secrets" / "workload-secret-seed").read_text()
        assert len(secret) == 128 and secret == secret.lower() and not secret.endswith("\n")
        leaf, intermediate = load_pems((out / "tls-config" / "certChain.pem").read_bytes())
        key = (out / "tls-config" / "key.pem").read_bytes()
        assert b"BEGIN PRIVATE KEY" in key
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        pk = load_pem_private_key(key, None)
        assert isinstance(pk, ec.EllipticCurvePrivateKey) and pk.curve.name == "secp256r1"
        assert leaf.public_key() == pk.public_key()
        assert leaf.subject.rfc4514_string() == f"CN={name}"
        verify_chain(leaf, [mesh_ca_v1], [])
        verify_chain(leaf, [root_ca], [intermediate])
        assert timings["total"] < 10
        leaves[name] = leaf
    web_secret = (tmp_path / "web" / "contrast" / "secrets" / "workload-secret-seed").read_text()
    db_secret = (tmp_path / "db" / "contrast" / "secrets" / "workload-secret-seed").read_text()
    assert web_secret != db_secret

    # A pod whose initdata digest is not in the manifest is refused.
    with pytest.raises(CallError) as denied:
        mesh_call(coord, docs, "intruder")
    assert denied.value.code == "PERMISSION_DENIED" and "not found in manifest" in denied.value.message
    status, metrics = coord.http("probes", "/metrics")
    assert status == 200
    assert 'contrast_grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="NewMeshCert"' in \
        metrics.decode()
    assert "contrast_coordinator_manifest_generation 1" in metrics.decode()

    # /attest: report data binds nonce, transition hash and both CA certs.
    nonce = os.urandom(32)
    attest_body = json.dumps({"nonce": base64.b64encode(nonce).decode()}).encode()
    status, body = coord.http("http", "/attest", attest_body, {"Content-Type": "application/json"})
    assert status == 200, body
    doc = json.loads(body)
    from attestation.atls.platforms import decode_snp
    from attestation.snp.abi import parse_report
    raw, _, _ = decode_snp(base64.b64decode(doc["raw_attestation_doc"]))
    manifests = [base64.b64decode(m) for m in doc["manifests"]]
    transition = hashlib.sha256(hashlib.sha256(manifests[0]).digest() + bytes(32)).digest()
    root_pem, mesh_pem = base64.b64decode(doc["root_ca"]), base64.b64decode(doc["mesh_ca"])
    want = attest_report_data(nonce, transition, root_pem, mesh_pem)
    assert parse_report(raw).report_data == want
    assert coord.http("http", "/attest", b'{"nonce": "AAAA"}', {"Content-Type": "application/json"})[0] == 400
    assert coord.http("http", "/attest", b"x" * 2000, {"Content-Type": "application/json"})[0] == 413

    # Update: admit the intruder; the mesh CA rotates, the root stays.
    commands.generate(ws, None, [str(docs / "web.toml"), str(docs / "db.toml"), str(docs / "intruder.toml")],
                      docs / "coordinator.toml", seedshare_key_bits=2048)
    commands.set_manifest(ws, coord.user, retry_for=5)
    mesh_ca_v2 = load_pems(ws.path("mesh-ca.pem").read_bytes())[0]
    assert mesh_ca_v2.public_key() != mesh_ca_v1.public_key()
    assert load_pems(ws.path("coordinator-root-ca.pem").read_bytes())[0].public_key() == root_ca.public_key()
    admitted = mesh_call(coord, docs, "intruder")
    new_leaf, _new_inter = load_pems(admitted.CertChain)
    verify_chain(new_leaf, [mesh_ca_v2], [])
    with pytest.raises(VerificationError):
        verify_chain(leaves["web"], [mesh_ca_v2], [])
    assert len(commands.verify(ws, coord.user).Manifests) == 2

    # Restart: the Coordinator needs recovery.
    coord.stop()
    coord.start()
    assert coord.http("probes", "/probe/readiness")[0] == 503
    assert coord.http("probes", "/probe/liveness")[0] == 200
    with pytest.raises(commands.CliError, match="recovery"):
        commands.verify(ws, coord.user)
    with pytest.raises(CallError) as stale:
        mesh_call(coord, docs, "web")
    assert stale.value.code == "UNAVAILABLE"  # no state: no validators, the handshake is refused
    assert coord.http("http", "/attest", json.dumps({"nonce": base64.b64encode(nonce).decode()}).encode(),
                      {"Content-Type": "application/json"})[0] == 412

    commands.recover(ws, coord.user)
    assert coord.http("probes", "/probe/readiness")[0] == 200
    with pytest.raises(commands.CliError, match="already recovered"):
        commands.recover(ws, coord.user)
    assert len(commands.verify(ws, coord.user).Manifests) == 2
    recovered = mesh_call(coord, docs, "web")
    leaf3, inter3 = load_pems(recovered.CertChain)
    verify_chain(leaf3, [root_ca], [inter3])  # the root CA still verifies
    with pytest.raises(VerificationError):
        verify_chain(leaf3, [mesh_ca_v2], [])  # the old mesh CA does not
    # Workload secrets survive recovery (they derive from the seed).
    assert recovered.WorkloadSecret.hex() == web_secret


def test_seedengine_vector_file_present() -> None:
    assert load("seedengine.json")["new_cases"]
