"""`python -m tools.demo --loopback`: the chain of trust on loopback (no VM), run as a user runs it,
plus its failure paths."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.demo import run as demo_run

REPO = Path(__file__).resolve().parents[2]


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.demo", "--loopback", *args], cwd=REPO,
                          capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_demo_passes_every_step() -> None:
    result = run_demo()
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "FAIL" not in out
    assert [int(n) for n in re.findall(r"^\[(\d)\]", out, re.M)] == [1, 2, 3, 4, 5]
    manifest_hashes = re.findall(r"manifest(?:\.json)? sha256 ([0-9a-f]{64})", out)
    assert len(manifest_hashes) == 2 and manifest_hashes[0] == manifest_hashes[1]  # generate == verify
    assert "StartContainer(container_id=web): ALLOWED, forwarded re-encoded" in out
    assert re.search(r"StartContainer\(container_id=db\): DENIED PERMISSION_DENIED "
                     r"\"StartContainerRequest is blocked by policy: ", out)
    assert ("DENIED PERMISSION_DENIED \"ExecProcessRequest is blocked by policy: agent_policy:16: "
            "ExecProcessRequest: the data owner allows no exec into containers\"") in out
    assert re.search(r"swapped initdata \(host lies\): deny-all, StartContainer\(container_id=web\): DENIED "
                     r"PERMISSION_DENIED .*initdata digest [0-9a-f]{64} does not match HOST_DATA", out)
    for name in ("web", "db"):
        assert re.search(rf"ok   {name}: CN={name} SANs \['{name}', '\*'\] issued by "
                         r"CN=system:coordinator:intermediate; chains to the mesh CA and the root CA", out)
    assert re.search(r"intruder .*PERMISSION_DENIED policy hash [0-9a-f]{64} not found in manifest", out)
    assert "from mesh peer CN=web over TLS" in out
    assert out.rstrip().splitlines()[-1].startswith("all steps passed")
    work = re.search(r"work dir (\S+)", out)
    assert work is not None and not Path(work.group(1)).exists()


def test_wrong_policy_fails_the_step_with_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A policy that allows everything must make step 3 fail: the demo checks decisions, not just runs."""
    permissive = tmp_path / "permissive.rego"
    permissive.write_text((REPO / "tools" / "demo" / "default-policy.rego").read_text())
    monkeypatch.setattr(demo_run, "POLICY", permissive)
    monkeypatch.setattr(sys, "stdout", out := io.StringIO())
    monkeypatch.setenv("ATTESTATION_SIMULATED_ROOT", "")  # main() sets it; restored after the test
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = demo_run.main(["--skip-mesh"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    text = out.getvalue()
    assert status == 1, text
    assert "FAIL StartContainerRequest should be PERMISSION_DENIED by the policy, got OK" in text
    assert "[4]" not in text  # later steps do not run after a failure


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_everything_and_removes_state() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tools.demo", "--loopback"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    port = 0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if m := re.search(r"UserAPI 127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
            break
    assert port and _listening(port), lines
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert "interrupted; stopped every process and removed the work dir" in text
    work = re.search(r"work dir (\S+)", text)
    assert work is not None and not Path(work.group(1)).exists()
    assert not _listening(port)  # the Coordinator is gone
