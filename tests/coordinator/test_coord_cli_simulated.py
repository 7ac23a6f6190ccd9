"""The data owner's path against a simulated Coordinator, exactly as docs/coordinator.md tells a new user:
real `python -m coordinator --simulate-tee` and `contrast` processes, no $ATTESTATION_SIMULATED_ROOT."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from coordinator.simulation import load_or_create_root
from tests.coordinator.harness import REPO, CoordinatorProcess, initdata
from tests.support import free_port


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ATTESTATION_SIMULATED_ROOT", None)
    return env


def contrast(ws: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "--workspace-dir", str(ws), *args],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def _generate(tmp_path: Path) -> tuple[Path, Path]:
    coord_doc = tmp_path / "coordinator.toml"
    coord_doc.write_bytes(initdata("coordinator"))
    (tmp_path / "web.toml").write_bytes(initdata("web"))
    ws = tmp_path / "ws"
    gen = contrast(ws, "generate", "--simulate-tee", "--coordinator-initdata", str(coord_doc),
                   "--seedshare-key-bits", "2048", f"{tmp_path / 'web.toml'}:web")
    assert gen.returncode == 0, gen.stderr
    assert "fill in" not in gen.stderr  # nothing left to fill in by hand
    return ws, coord_doc


def test_set_verify_recover_against_simulated_coordinator_with_flags_only(tmp_path: Path) -> None:
    ws, coord_doc = _generate(tmp_path)
    state = tmp_path / "state"
    coord = CoordinatorProcess(state, state / "simulated-amd", coord_doc, export_sim_root=False)
    coord.start(timeout=90)
    try:
        # Without the flag the CLI says which flag and which directory it needs.
        refused = contrast(ws, "set", "-c", coord.user, "--retry-for", "0")
        assert refused.returncode == 1
        assert "--simulated-root" in refused.stderr and "simulated-amd" in refused.stderr
        root = str(state / "simulated-amd")
        done = contrast(ws, "set", "-c", coord.user, "--simulated-root", root)
        assert done.returncode == 0, done.stderr
        assert (ws / "mesh-ca.pem").exists() and (ws / "seed-shares.json").exists()
        checked = contrast(ws, "verify", "-c", coord.user, "--simulated-root", root)
        assert checked.returncode == 0, checked.stderr
        # A root that is not the Coordinator's is not trusted: attestation fails, naming the chain.
        other = CoordinatorProcess(tmp_path / "s2", tmp_path / "s2" / "simulated-amd", coord_doc,
                                   export_sim_root=False)
        other.start(timeout=90)
        other.stop()
        foreign = contrast(ws, "verify", "-c", coord.user, "--simulated-root", str(other.sim_root))
        assert foreign.returncode == 1 and "aTLS" in foreign.stderr
        coord.stop()
        coord.start(timeout=90)
        recovered = contrast(ws, "recover", "-c", coord.user, "--simulated-root", root)
        assert recovered.returncode == 0, recovered.stderr
    finally:
        coord.stop()


def test_simulate_tee_without_initdata_is_refused_with_the_reason(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "coordinator", "--state-dir", str(tmp_path), "--simulate-tee",
            "--listen-host", "127.0.0.1"]
    proc = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--simulate-initdata" in proc.stderr and "--coordinator-initdata" in proc.stderr
    # Without a TEE and without --simulate-tee, the hint names both flags the simulated path needs.
    without = [a for a in argv if a != "--simulate-tee"]
    proc = subprocess.run(without, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1 and "no TEE found" in proc.stderr
    assert "--simulate-tee --simulate-initdata" in proc.stderr


def test_set_retries_while_the_coordinator_is_not_listening_yet(tmp_path: Path) -> None:
    ws, coord_doc = _generate(tmp_path)
    state = tmp_path / "state"
    load_or_create_root(state / "simulated-amd")  # the Coordinator ran before: it is restarting
    port = free_port()
    setter = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "--workspace-dir", str(ws), "--log-level", "INFO", "set",
         "-c", f"127.0.0.1:{port}", "--simulated-root", str(state / "simulated-amd"), "--retry-for", "150"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    coord = CoordinatorProcess(state, state / "simulated-amd", coord_doc, export_sim_root=False,
                               extra_args=["--user-port", str(port)])
    try:
        # Wait until the CLI has been refused at least once (it must still be running, not have given up).
        assert setter.stderr is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "coordinator_unreachable" not in seen:
            assert time.monotonic() < deadline, seen
            assert setter.poll() is None, seen + setter.stderr.read()
            if select.select([setter.stderr], [], [], 0.5)[0]:
                seen += setter.stderr.readline()
        coord.start(timeout=90)
        out, err = setter.communicate(timeout=150)
        assert setter.returncode == 0, seen + err
        assert "manifest set" in out
    finally:
        if setter.poll() is None:
            setter.kill()
            setter.communicate()
        coord.stop()


def test_set_gives_up_after_its_deadline_naming_the_address(tmp_path: Path) -> None:
    ws, _ = _generate(tmp_path)
    load_or_create_root(tmp_path / "root")
    port = free_port()
    t0 = time.monotonic()
    proc = contrast(ws, "set", "-c", f"127.0.0.1:{port}", "--simulated-root", str(tmp_path / "root"),
                    "--retry-for", "3")
    assert proc.returncode == 1
    assert time.monotonic() - t0 >= 3
    assert f"127.0.0.1:{port}" in proc.stderr and "gave up after 3 s" in proc.stderr


def _help(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *argv, "--help"], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "`" not in proc.stdout  # plain text, not the docstrings' RST markup
    return proc.stdout


def test_help_describes_every_command(tmp_path: Path) -> None:
    top = _help("coordinator.cli")
    for line in ("generate ", "set ", "verify ", "recover "):
        assert f"    {line}" in top  # each command is listed with a one-line description
    assert "--simulated-root" in top
    assert "--disable-updates" in _help("coordinator.cli", "generate")
    assert "--force" in _help("coordinator.cli", "recover")
    for name in ("set", "verify", "recover"):
        assert "--simulated-root" in _help("coordinator.cli", name)
    assert "--simulate-initdata" in _help("coordinator")
    assert "COORDINATOR_HOST" in _help("initializer")


def test_unknown_option_after_a_command_shows_that_commands_usage(tmp_path: Path) -> None:
    proc = contrast(tmp_path, "set", "-c", "127.0.0.1:1", "--bogus")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: contrast set ") and "unrecognized arguments: --bogus" in proc.stderr
