"""Transit engine over mTLS with a workload's mesh certificate (the status cases of transitengine.json)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli import commands
from coordinator.cli.workspace import Workspace
from initializer.run import Settings, run
from tests.coordinator.harness import CoordinatorProcess, initdata, write_reference_values
from tests.coordinator.vectors import load

TE = load("transitengine.json")


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CoordinatorProcess, Path]]:
    tmp = tmp_path_factory.mktemp("transit")
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTESTATION_SIMULATED_ROOT", str(tmp / "simroot"))
    for name in ("coordinator", "autounseal", "other"):
        (tmp / f"{name}.toml").write_bytes(initdata(name))
    coord = CoordinatorProcess(tmp / "state", tmp / "simroot", tmp / "coordinator.toml")
    coord.start()
    try:
        ws = Workspace(tmp / "ws")
        workloads = [str(tmp / "autounseal.toml"), f"{tmp / 'other.toml'}:thi$$hoU_ld+*work"]
        commands.generate(ws, write_reference_values(tmp / "rv.json"), workloads, tmp / "coordinator.toml",
                          seedshare_key_bits=2048)
        commands.set_manifest(ws, coord.user, retry_for=5)
        for name in ("autounseal", "other"):
            environ = {"COORDINATOR_HOST": coord.mesh, "ATTESTATION_SIMULATED_ROOT": str(coord.sim_root)}
            run(Settings(out_dir=tmp / name, done_file=tmp / name / "done", simulate_tee=True,
                         simulate_initdata=tmp / f"{name}.toml", environ=environ), threading.Event())
        yield coord, tmp
    finally:
        coord.stop()
        mp.undo()


def request(coord: CoordinatorProcess, pod: Path, method: str, path: str, body: Any) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(pod / "tls-config" / "mesh-ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(pod / "tls-config" / "certChain.pem", pod / "tls-config" / "key.pem")
    conn = http.client.HTTPSConnection("127.0.0.1", coord.ports["transit"], context=ctx, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_status_cases(pods: tuple[CoordinatorProcess, Path]) -> None:
    coord, tmp = pods
    owners = {"autounseal": tmp / "autounseal", "thi$$hoU_ld+*work": tmp / "other"}
    for case in TE["http_cases"]["cases"]:
        pod = owners.get(case["name"], tmp / "autounseal")
        body = {"plaintext": case["plaintext"], "associated_data": case["associated_data"]}
        if "key_version" in case:
            body["key_version"] = case["key_version"]
        if case["plaintext"].startswith("lT3r...("):
            body["plaintext"] = TE["http_cases"]["cases"][1]["plaintext"]
        from urllib.parse import quote

        status, doc = request(coord, pod, "PUT", "/v1/transit/encrypt/" + quote(case["name"], safe="/"), body)
        assert status == case["status"], (case["id"], doc)
        if status != 200:
            continue
        ct = doc["data"]["ciphertext"]
        assert ct.startswith(f"vault:v{case.get('key_version', 0)}:")
        status, doc = request(coord, pod, "POST", "/v1/transit/decrypt/" + quote(case["name"], safe="/"),
                              {"ciphertext": ct, "associated_data": case["associated_data"]})
        assert status == 200 and doc["data"]["plaintext"] == case["plaintext"]


def test_authorization_and_mtls(pods: tuple[CoordinatorProcess, Path]) -> None:
    coord, tmp = pods
    body = {"plaintext": base64.b64encode(b"x").decode(), "key_version": 1}
    # Another workload's key name: 403.
    assert request(coord, tmp / "other", "PUT", "/v1/transit/encrypt/autounseal", body)[0] == 403
    # No client certificate: the TLS handshake fails.
    ctx = ssl.create_default_context(cafile=str(tmp / "autounseal" / "tls-config" / "mesh-ca.pem"))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", coord.ports["transit"], context=ctx, timeout=10)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            conn.request("PUT", "/v1/transit/encrypt/autounseal", body=json.dumps(body))
            conn.getresponse().read()
    finally:
        conn.close()
    # The server presents a mesh certificate that verifies against the mesh CA.
    status, _ = request(coord, tmp / "autounseal", "PUT", "/v1/transit/encrypt/autounseal", body)
    assert status == 200
