"""Crash safety of the history store: kill -9 at arbitrary points leaves a consistent history."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from coordinator.cli import commands
from coordinator.cli.workspace import Workspace
from coordinator.history import History
from coordinator.seedengine import SeedEngine
from coordinator.store import FileStore
from tests.coordinator.harness import REPO, CoordinatorProcess, initdata, write_reference_values

SEED, SALT = b"\x5a" * 64, b"\xa5" * 32

WRITER = """
import sys
from coordinator.history import History, LatestTransition, Transition, ZERO
from coordinator.seedengine import SeedEngine
from coordinator.store import FileStore
h = History(FileStore(sys.argv[1]))
key = SeedEngine(bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])).transaction_signing_key
prev, old = ZERO, None
if h.has_latest():
    old = h.get_latest(key.public_key())
    prev = old.transition_hash
i = 0
print("go", flush=True)
while True:
    m = h.set_manifest(b"manifest %d " % i + b"x" * 4096)
    t = h.set_transition(Transition(m, prev))
    new = LatestTransition.sign(t, key)
    h.set_latest(old, new, key.public_key())
    prev, old, i = t, new, i + 1
"""


def check_consistent(root: Path) -> int:
    history = History(FileStore(root))
    if not history.has_latest():
        return 0
    key = SeedEngine(SEED, SALT).transaction_signing_key.public_key()
    latest = history.get_latest(key)  # complete and signed
    return len(history.manifests(latest.transition_hash))  # every entry present and hashing right


def test_kill_9_during_history_writes(tmp_path: Path) -> None:
    rng = random.Random(8)
    root = tmp_path / "history"
    lengths = []
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), SEED.hex(), SALT.hex()],
                                cwd=REPO, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"go\n"
        time.sleep(rng.uniform(0.005, 0.08))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        lengths.append(check_consistent(root))
    assert lengths == sorted(lengths) and lengths[-1] > 0  # history only grows, never breaks


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_during_set_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, round_: int) -> None:
    monkeypatch.setenv("ATTESTATION_SIMULATED_ROOT", str(tmp_path / "simroot"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("coordinator", "web", "db"):
        (docs / f"{name}.toml").write_bytes(initdata(name))
    coord = CoordinatorProcess(tmp_path / "state", tmp_path / "simroot", docs / "coordinator.toml")
    coord.start()
    ws = Workspace(tmp_path / "ws")
    try:
        rv = write_reference_values(tmp_path / "rv.json")
        coord_doc = docs / "coordinator.toml"
        commands.generate(ws, rv, [str(docs / "web.toml")], coord_doc, seedshare_key_bits=2048)
        commands.set_manifest(ws, coord.user, retry_for=5)
        first = ws.path("manifest.json").read_bytes()
        both = [str(docs / "web.toml"), str(docs / "db.toml")]
        commands.generate(ws, None, both, coord_doc, seedshare_key_bits=2048)
        second = ws.path("manifest.json").read_bytes()
        errors: list[Exception] = []

        def update() -> None:
            try:
                commands.set_manifest(ws, coord.user, retry_for=0)
            except commands.CliError as exc:
                errors.append(exc)

        t = threading.Thread(target=update)
        t.start()
        time.sleep([0.0, 0.03, 0.08][round_])
        assert coord.proc is not None
        coord.proc.send_signal(signal.SIGKILL)
        coord.proc.wait()
        t.join(30)
        coord.stop()
        coord.start()
        commands.recover(ws, coord.user)  # the persisted history verifies with the seed
        manifests = [m for m in _history(ws, coord)]
        assert manifests[0] == first
        assert manifests[-1] in (first, second) and len(manifests) in (1, 2)
    finally:
        coord.stop()


def _history(ws: Workspace, coord: CoordinatorProcess) -> list[bytes]:
    try:
        return list(commands.verify(ws, coord.user).Manifests)
    except commands.CliError:  # the local manifest.json may be ahead of what was committed
        from attestation.atls import ClientConfig, call, split_host_port
        from coordinator import rpc
        from coordinator.proto import userapi_pb2

        host, port = split_host_port(coord.user, 1313)
        validators = commands.coordinator_validators(commands._load_manifest(ws))
        resp = call(host, port, ClientConfig(validators=validators), rpc.GET_MANIFESTS,
                    userapi_pb2.GetManifestsRequest())
        return list(resp.Manifests)
