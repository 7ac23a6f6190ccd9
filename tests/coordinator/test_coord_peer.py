"""Peer recovery: a second Coordinator on the same store recovers from the first over mutual aTLS."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from coordinator.cli import commands
from coordinator.cli.workspace import Workspace
from tests.coordinator.harness import CoordinatorProcess, initdata, write_reference_values
from tests.support import free_port


def test_peer_recovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTESTATION_SIMULATED_ROOT", str(tmp_path / "simroot"))
    for name in ("coordinator", "web", "other-coordinator"):
        (tmp_path / f"{name}.toml").write_bytes(initdata(name))
    a = CoordinatorProcess(tmp_path / "state", tmp_path / "simroot", tmp_path / "coordinator.toml")
    a.start()
    b = c = None
    try:
        ws = Workspace(tmp_path / "ws")
        commands.generate(ws, write_reference_values(tmp_path / "rv.json"), [str(tmp_path / "web.toml")],
                          tmp_path / "coordinator.toml", seedshare_key_bits=2048)
        commands.set_manifest(ws, a.user, retry_for=5)
        mesh_a = x509.load_pem_x509_certificate(ws.path("mesh-ca.pem").read_bytes())

        # A peer that cannot be reached: B stays in recovery mode.
        dead = f"127.0.0.1:{free_port()}"
        b = CoordinatorProcess(tmp_path / "state", tmp_path / "simroot", tmp_path / "coordinator.toml",
                               extra_args=["--peer", dead])
        b.start()
        assert b.http("probes", "/probe/readiness")[0] == 503
        b.stop()

        # A Coordinator whose own policy is not the manifest's coordinator policy is refused by A.
        c = CoordinatorProcess(tmp_path / "state", tmp_path / "simroot", tmp_path / "other-coordinator.toml",
                               extra_args=["--peer", a.mesh])
        c.start()
        assert c.http("probes", "/probe/readiness")[0] == 503
        c.stop()

        b = CoordinatorProcess(tmp_path / "state", tmp_path / "simroot", tmp_path / "coordinator.toml",
                               extra_args=["--peer", a.mesh])
        b.start()
        assert b.http("probes", "/probe/readiness")[0] == 200
        resp = commands.verify(ws, b.user)
        assert x509.load_pem_x509_certificate(resp.MeshCA).public_key() == mesh_a.public_key()  # taken over
        assert len(resp.Manifests) == 1

        # A moves the history forward; B's update then loses the compare-and-swap and B turns stale.
        both = [str(tmp_path / "web.toml"), f"{tmp_path / 'other-coordinator.toml'}:other"]
        commands.generate(ws, None, both, tmp_path / "coordinator.toml", seedshare_key_bits=2048)
        commands.set_manifest(ws, a.user, retry_for=5)
        with pytest.raises(commands.CliError, match="FAILED_PRECONDITION"):
            commands.set_manifest(ws, b.user, retry_for=0)
        assert b.http("probes", "/probe/readiness")[0] == 503
        assert a.http("probes", "/probe/readiness")[0] == 200
    finally:
        for proc in (a, b, c):
            if proc is not None:
                proc.stop()
