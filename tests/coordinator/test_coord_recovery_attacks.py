"""Recovery attacked from the host's position (issue 13, items 1 and 2).

The host owns the Coordinator's state directory. Each test writes into it what a host would (a forged
manifest with transitions signed by the host's own seed; an older signed ``transitions/latest`` put
back), restarts a real Coordinator process and recovers it with the real CLI or through a peer. Every
attack must be refused with a clear error, leave the Coordinator in recovery mode and leave the state
directory as the host left it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.atls import CallError
from coordinator import manifest as manifest_mod
from coordinator.cli import commands
from coordinator.cli.workspace import Workspace
from coordinator.history import LATEST_KEY, ZERO, History, LatestTransition, Transition
from coordinator.seedengine import SeedEngine
from coordinator.state import encrypt_seed
from coordinator.store import FileStore
from tests.coordinator.harness import CoordinatorProcess, initdata, write_reference_values
from tests.coordinator.test_coord_e2e import mesh_call

KEY_BITS = 2048


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATTESTATION_SIMULATED_ROOT", str(tmp_path / "simroot"))
    out = tmp_path / "docs"
    out.mkdir()
    for name in ("coordinator", "web", "intruder", "host-vm"):
        (out / f"{name}.toml").write_bytes(initdata(name))
    write_reference_values(out / "rv.json")
    return out


@pytest.fixture
def procs() -> Iterator[list[CoordinatorProcess]]:
    started: list[CoordinatorProcess] = []
    yield started
    for proc in started:
        proc.stop()


def start(procs: list[CoordinatorProcess], tmp_path: Path, state: str, policy: Path,
          *extra: str, module: str = "coordinator") -> CoordinatorProcess:
    proc = CoordinatorProcess(tmp_path / state, tmp_path / "simroot", policy, extra_args=list(extra),
                              module=module)
    proc.start()
    procs.append(proc)
    return proc


def readiness(proc: CoordinatorProcess) -> int:
    return proc.http("probes", "/probe/readiness")[0]


def wait_ready(proc: CoordinatorProcess, want: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while readiness(proc) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"readiness never became {want}")
        time.sleep(0.2)


def forge_history(state_dir: Path, hws: Workspace, policies: list[bytes]) -> bytes:
    """What a host does to a stopped Coordinator's disk: its own manifest (its own owner keys), a
    transition for it, and transitions/latest signed with its own seed. Returns the forged latest."""
    seed, salt = os.urandom(64), os.urandom(32)
    engine = SeedEngine(seed, salt)
    store = FileStore(state_dir / "history")
    history = History(store)
    for doc in policies:
        history.set_policy(doc)
    manifest_hash = history.set_manifest(hws.path("manifest.json").read_bytes())
    transition = history.set_transition(Transition(manifest_hash, ZERO))
    latest = LatestTransition.sign(transition, engine.transaction_signing_key).marshal()
    store.set(LATEST_KEY, latest)
    key = hws.seedshare_owner_key(create=False)
    assert key is not None
    share = encrypt_seed(seed, manifest_mod.pkcs1_der(key.public_key()).hex())
    hws.write("seed-shares.json", json.dumps({
        "SeedShares": [{"PublicKey": share.public_key_hex,
                        "EncryptedSeed": base64.b64encode(share.encrypted_seed).decode()}],
        "salt": base64.b64encode(salt).decode(),
    }).encode(), 0o600)
    return latest


def latest_bytes(state_dir: Path) -> bytes:
    return (state_dir / "history" / LATEST_KEY).read_bytes()


# -- item 1: a forged history ------------------------------------------------------------------------------
def test_owner_recovery_refuses_history_forged_by_the_host(
    tmp_path: Path, docs: Path, procs: list[CoordinatorProcess]
) -> None:
    # The owner binds its keys into the Coordinator's initdata, then deploys as usual.
    ws = Workspace(tmp_path / "ws")
    bound = docs / "coordinator-bound.toml"
    bound.write_bytes(commands.bind_owners(ws, (docs / "coordinator.toml").read_bytes(), KEY_BITS))
    commands.generate(ws, docs / "rv.json", [str(docs / "web.toml")], bound, seedshare_key_bits=KEY_BITS)
    coord = start(procs, tmp_path, "state", bound)
    # The host cannot set a first manifest of its own on this Coordinator either.
    hws = Workspace(tmp_path / "host-ws")
    commands.generate(hws, docs / "rv.json", [str(docs / "intruder.toml")], bound,
                      seedshare_key_bits=KEY_BITS)
    with pytest.raises(commands.CliError, match="initdata does not list"):
        commands.set_manifest(hws, coord.user, retry_for=5)
    commands.set_manifest(ws, coord.user, retry_for=5)
    genuine = latest_bytes(coord.state_dir)
    coord.stop()

    # The host writes its own manifest (its own seedshare and workload owner keys, its intruder pod, the
    # genuine Coordinator policy) and signs it with its own seed, then restarts the Coordinator.
    policies = [bound.read_bytes(), (docs / "intruder.toml").read_bytes()]
    forged = forge_history(coord.state_dir, hws, policies)
    coord.start()
    assert readiness(coord) == 503

    # The host recovers with its own key and seed: refused, nothing adopted.
    with pytest.raises(commands.CliError, match="measured initdata") as refused:
        commands.recover(hws, coord.user)
    assert "PERMISSION_DENIED" in str(refused.value)
    assert readiness(coord) == 503
    assert latest_bytes(coord.state_dir) == forged
    with pytest.raises(CallError):
        mesh_call(coord, docs, "intruder")

    # The owner's own recovery notices that this is not the history its seed signed.
    with pytest.raises(commands.CliError, match="not signed by the key the supplied seed derives"):
        commands.recover(ws, coord.user)
    assert readiness(coord) == 503

    # Putting the genuine latest back, the owner recovers (the refusal changed nothing).
    (coord.state_dir / "history" / LATEST_KEY).write_bytes(genuine)
    commands.recover(ws, coord.user)
    assert readiness(coord) == 200
    assert mesh_call(coord, docs, "web").CertChain


def test_peer_recovery_refuses_a_forged_history_naming_the_hosts_vm(
    tmp_path: Path, docs: Path, procs: list[CoordinatorProcess]
) -> None:
    # The host's VM: attested under the host's own policy, it runs a Coordinator that hands its seed to
    # anyone. The host sets its own manifest there (that VM's policy as the Coordinator policy).
    host_vm = start(procs, tmp_path, "host-vm-state", docs / "host-vm.toml",
                    module="tests.coordinator.hostile_peer")
    hws = Workspace(tmp_path / "host-ws")
    commands.generate(hws, docs / "rv.json", [str(docs / "intruder.toml")], docs / "host-vm.toml",
                      seedshare_key_bits=KEY_BITS)
    commands.set_manifest(hws, host_vm.user, retry_for=5)

    # The host puts that history on a genuine Coordinator's disk and points it at its VM as the peer.
    shutil.copytree(host_vm.state_dir / "history", tmp_path / "victim" / "history")
    forged = latest_bytes(tmp_path / "victim")
    victim = start(procs, tmp_path, "victim", docs / "coordinator.toml", "--peer", host_vm.mesh)
    assert readiness(victim) == 503
    assert latest_bytes(victim.state_dir) == forged
    with pytest.raises(CallError):
        mesh_call(victim, docs, "intruder")


def test_peer_recovery_refuses_a_peer_with_the_same_policy_but_another_image(
    tmp_path: Path, docs: Path, procs: list[CoordinatorProcess]
) -> None:
    # An anchored victim. The host's VM carries the victim's very initdata (same HOST_DATA), but the
    # host's own image (another launch measurement), and serves a history the host made there: the
    # owner's public keys (so the anchor is satisfied), reference values that admit the host's image.
    ws = Workspace(tmp_path / "ws")
    bound = docs / "coordinator-bound.toml"
    bound.write_bytes(commands.bind_owners(ws, (docs / "coordinator.toml").read_bytes(), KEY_BITS))
    commands.generate(ws, docs / "rv.json", [str(docs / "web.toml")], bound, seedshare_key_bits=KEY_BITS)
    host_image = "11" * 48
    host_vm = start(procs, tmp_path, "host-vm-state", bound, "--simulate-measurement", host_image,
                    module="tests.coordinator.hostile_peer")
    rv = json.loads((docs / "rv.json").read_text())
    rv["snp"].append({**rv["snp"][0], "TrustedMeasurement": host_image})  # the victim's and the host's
    (docs / "rv-host.json").write_text(json.dumps(rv))
    hws = Workspace(tmp_path / "host-ws")
    commands.generate(hws, docs / "rv-host.json", [str(docs / "intruder.toml")], bound,
                      seedshare_key_bits=KEY_BITS)
    doc = json.loads(hws.path("manifest.json").read_bytes())
    owner = json.loads(ws.path("manifest.json").read_bytes())
    doc["SeedshareOwnerPubKeys"] = owner["SeedshareOwnerPubKeys"]
    doc["WorkloadOwnerKeyDigests"] = owner["WorkloadOwnerKeyDigests"]
    hws.write("manifest.json", json.dumps(doc).encode())
    commands.set_manifest(hws, host_vm.user, retry_for=5)

    shutil.copytree(host_vm.state_dir / "history", tmp_path / "victim" / "history")
    forged = latest_bytes(tmp_path / "victim")
    victim = start(procs, tmp_path, "victim", bound, "--peer", host_vm.mesh)
    assert readiness(victim) == 503
    assert latest_bytes(victim.state_dir) == forged
    with pytest.raises(CallError):
        mesh_call(victim, docs, "intruder")


# -- item 2: rollback --------------------------------------------------------------------------------------
def _two_manifests(docs: Path, coord: CoordinatorProcess, ws: Workspace) -> bytes:
    """v1 admits web and intruder; v2 removes intruder. Returns v1's signed latest (saved by the host)."""
    commands.generate(ws, docs / "rv.json", [str(docs / "web.toml"), str(docs / "intruder.toml")],
                      docs / "coordinator.toml", seedshare_key_bits=KEY_BITS)
    commands.set_manifest(ws, coord.user, retry_for=5)
    old_latest = latest_bytes(coord.state_dir)
    commands.generate(ws, None, [str(docs / "web.toml")], docs / "coordinator.toml",
                      seedshare_key_bits=KEY_BITS)
    commands.set_manifest(ws, coord.user, retry_for=5)
    with pytest.raises(CallError):
        mesh_call(coord, docs, "intruder")
    return old_latest


def test_owner_recovery_refuses_a_rolled_back_latest(
    tmp_path: Path, docs: Path, procs: list[CoordinatorProcess], caplog: pytest.LogCaptureFixture
) -> None:
    coord = start(procs, tmp_path, "state", docs / "coordinator.toml")
    ws = Workspace(tmp_path / "ws")
    old_latest = _two_manifests(docs, coord, ws)
    seen = ws.last_transition()
    assert seen is not None and seen == latest_bytes(coord.state_dir)[:32]
    stale_copy = tmp_path / "ws-copy"
    shutil.copytree(ws.root, stale_copy)
    coord.stop()

    # The host puts back the older, validly signed latest (v1, which still admits intruder).
    (coord.state_dir / "history" / LATEST_KEY).write_bytes(old_latest)
    coord.start()
    with pytest.raises(commands.CliError, match="rollback") as refused:
        commands.recover(ws, coord.user)
    assert "--allow-rollback" in str(refused.value)
    assert seen.hex() in str(refused.value)
    assert readiness(coord) == 503
    assert latest_bytes(coord.state_dir) == old_latest
    assert ws.last_transition() == seen

    # The owner can still go back on purpose, and is told loudly.
    with caplog.at_level(logging.WARNING, logger="contrast"):
        commands.recover(ws, coord.user, allow_rollback=True)
    assert "OLDER manifest" in caplog.text and "WITHOUT the transition last seen" in caplog.text
    assert readiness(coord) == 200
    assert mesh_call(coord, docs, "intruder").CertChain  # that is what going back means
    assert ws.last_transition() == old_latest[:32]

    # A workspace that saw v2 and did not agree to go back: verify says ROLLBACK.
    with pytest.raises(commands.RollbackDetectedError, match="ROLLBACK"):
        commands.verify(Workspace(stale_copy), coord.user)


def test_peer_recovery_refuses_a_rolled_back_latest(
    tmp_path: Path, docs: Path, procs: list[CoordinatorProcess]
) -> None:
    a = start(procs, tmp_path, "state", docs / "coordinator.toml")
    ws = Workspace(tmp_path / "ws")
    old_latest = _two_manifests(docs, a, ws)
    current = latest_bytes(a.state_dir)
    # While A runs v2 from memory, the host puts v1's latest back into the shared store and starts B.
    (a.state_dir / "history" / LATEST_KEY).write_bytes(old_latest)
    b = start(procs, tmp_path, "state", docs / "coordinator.toml", "--peer", a.mesh)
    assert readiness(b) == 503
    with pytest.raises(CallError):
        mesh_call(b, docs, "intruder")
    assert latest_bytes(b.state_dir) == old_latest
    # With the store put right, B recovers from A and runs A's manifest.
    (a.state_dir / "history" / LATEST_KEY).write_bytes(current)
    wait_ready(b, 200, timeout=90)  # the next peer-recovery round, 15 s later
    with pytest.raises(CallError):
        mesh_call(b, docs, "intruder")
    assert mesh_call(b, docs, "web").CertChain
