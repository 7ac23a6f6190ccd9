"""CLI behaviour that needs no Coordinator, and the backend's fail-closed identity lookup."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest

from attestation.atls.platforms import SnpIssuer
from attestation.testing import SimulatedCrlSource
from coordinator import rpc, simulation
from coordinator.cli.__main__ import main as cli_main
from coordinator.proto import meshapi_pb2, userapi_pb2
from coordinator.server import Config, Coordinator, Ports
from tests.coordinator.harness import initdata


def test_generate_reports_missing_values_and_set_needs_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.toml").write_bytes(initdata("c"))
    (tmp_path / "w.toml").write_bytes(initdata("w"))
    rv = {"snp": [{"ProductName": "Genoa", "TrustedMeasurement": "", "MinimumTCB": {},
                   "GuestPolicy": {"SMT": True}}]}
    (tmp_path / "rv.json").write_text(json.dumps(rv))
    ws = tmp_path / "ws"
    rc = cli_main(["--workspace-dir", str(ws), "generate", "--coordinator-initdata", str(tmp_path / "c.toml"),
                   "--reference-values", str(tmp_path / "rv.json"), "--seedshare-key-bits", "2048",
                   f"{tmp_path / 'w.toml'}:web"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "ReferenceValues.snp[0].TrustedMeasurement" in err
    assert "MinimumTCB.TEEVersion: expected missing" in err
    doc = json.loads((ws / "manifest.json").read_bytes())
    assert {e.get("Role", "") for e in doc["Policies"].values()} == {"coordinator", ""}
    assert any(e["SANs"] == ["web", "*"] and e["WorkloadSecretID"] == "web" for e in doc["Policies"].values())
    assert len(doc["WorkloadOwnerKeyDigests"]) == 1 and len(doc["SeedshareOwnerPubKeys"]) == 1
    assert (ws / "workload-owner.pem").stat().st_mode & 0o777 == 0o600
    # set refuses an invalid manifest with the field names, before any network traffic.
    assert cli_main(["--workspace-dir", str(ws), "set", "-c", "127.0.0.1:1"]) == 1
    assert "TrustedMeasurement" in capsys.readouterr().err
    # A bad initdata document is named.
    (tmp_path / "bad.toml").write_bytes(b'version = "9"\n')
    bad = str(tmp_path / "bad.toml")
    rc = cli_main(["--workspace-dir", str(ws), "generate", "--coordinator-initdata", bad])
    assert rc == 1 and "unknown version" in capsys.readouterr().err


def test_recover_without_shares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--workspace-dir", str(tmp_path), "recover", "-c", "127.0.0.1:1"]) == 1
    assert "manifest.json" in capsys.readouterr().err


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    prov = simulation.provider(tmp_path / "sim")
    config = Config(state_dir=tmp_path / "state", issuer=SnpIssuer(prov), listen_host="127.0.0.1",
                    ports=Ports(0, 0, 0, 0, 0), simulated_roots=prov.trusted_roots(),
                    revocation=SimulatedCrlSource(prov.root))
    coord = Coordinator(config)
    asyncio.run_coroutine_threadsafe(coord.start(), loop).result(30)
    try:
        yield coord
    finally:
        asyncio.run_coroutine_threadsafe(coord.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_backend_without_terminator_is_refused(coordinator: Coordinator) -> None:
    """The grpcio backend on loopback knows no identity for a direct connection: fail closed."""
    with grpc.insecure_channel(f"127.0.0.1:{coordinator.backend_ports['mesh']}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            rpc.call(ch, rpc.NEW_MESH_CERT, meshapi_pb2.NewMeshCertRequest(), 10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "no aTLS handshake recorded" in err.value.details()
    with grpc.insecure_channel(f"127.0.0.1:{coordinator.backend_ports['user']}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            rpc.call(ch, rpc.GET_MANIFESTS, userapi_pb2.GetManifestsRequest(), 10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # anonymous, and no state yet
