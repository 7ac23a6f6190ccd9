"""Initializer: environment errors, retries until SIGTERM, atomic files, default-deny removal."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from initializer.defaultdeny import remove_default_deny
from initializer.files import MeshMaterial, write_done, write_mesh_files
from initializer.run import InitializerError, Settings, StoppedError, run
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]


def test_missing_coordinator_host(tmp_path: Path) -> None:
    with pytest.raises(InitializerError, match="reading environment: COORDINATOR_HOST is not set"):
        run(Settings(out_dir=tmp_path, environ={}), threading.Event())


def test_cryptsetup_device_that_is_no_block_device_fails_before_the_coordinator(tmp_path: Path) -> None:
    with pytest.raises(InitializerError, match=r"setting up encrypted volume: .*/dev/csi0"):
        run(Settings(out_dir=tmp_path, environ={"COORDINATOR_HOST": "x", "CRYPTSETUP_DEVICE": "/dev/csi0"}),
            threading.Event())


def test_simulation_needs_explicit_root(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path, simulate_tee=True, environ={"COORDINATOR_HOST": "x"})
    with pytest.raises(InitializerError, match="creating issuer: --simulate-tee needs ATTESTATION_SIMULATED"):
        run(settings, threading.Event())


def test_no_tee_names_the_initializer_flags(tmp_path: Path) -> None:
    env = dict(os.environ, COORDINATOR_HOST="127.0.0.1:1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "initializer", "--out-dir", str(tmp_path / "out"),
                           "--done-file", str(tmp_path / "done")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "no TEE found" in proc.stderr and "--simulate-tee" in proc.stderr
    assert "allow_simulated" not in proc.stderr


def test_retries_until_sigterm_without_writing(tmp_path: Path) -> None:
    """No Coordinator listening: the initializer keeps retrying; SIGTERM ends it, nothing is written."""
    port = free_port()  # nothing listens there: connection refused
    root = tmp_path / "simroot"
    from coordinator.simulation import load_or_create_root

    load_or_create_root(root)
    env = dict(os.environ, COORDINATOR_HOST=f"127.0.0.1:{port}", ATTESTATION_SIMULATED_ROOT=str(root),
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "initializer", "--out-dir", str(tmp_path / "out"),
                             "--done-file", str(tmp_path / "done"), "--simulate-tee"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    t0 = time.monotonic()
    while sum("event=new_mesh_cert_failed" in line for line in lines) < 2 and time.monotonic() - t0 < 30:
        line = proc.stderr.readline().decode()
        if not line:
            break
        lines.append(line)
    gap = time.monotonic() - t0
    proc.terminate()
    rest = proc.communicate(timeout=10)[1].decode()
    text = "".join(lines) + rest
    assert proc.returncode == 1
    assert text.count("event=new_mesh_cert_failed") >= 2, text
    assert "retry_in=5s" in text and "event=stopped" in text
    assert gap >= 4.5  # the second attempt came after the 5 s wait
    assert not (tmp_path / "out").exists() and not (tmp_path / "done").exists()


def test_stop_event_interrupts_wait(tmp_path: Path) -> None:
    from coordinator.simulation import load_or_create_root

    load_or_create_root(tmp_path / "simroot")
    stop = threading.Event()
    settings = Settings(out_dir=tmp_path / "o", simulate_tee=True, retry_interval=30,
                        environ={"COORDINATOR_HOST": "127.0.0.1:1", "ATTESTATION_SIMULATED_ROOT":
                                 str(tmp_path / "simroot")})
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(StoppedError):
        run(settings, stop)
    assert time.monotonic() - t0 < 10


def test_files_and_modes(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    material = MeshMaterial(b"mesh", b"chain", b"root", b"\x01" * 64)
    write_mesh_files(tmp_path, key, material)
    assert (tmp_path / "secrets" / "workload-secret-seed").read_text() == "01" * 64
    assert stat.S_IMODE((tmp_path / "tls-config" / "key.pem").stat().st_mode) == 0o400
    # Without a secret the file is not written.
    write_mesh_files(tmp_path / "b", key, MeshMaterial(b"m", b"c", b"r", b""))
    assert not (tmp_path / "b" / "secrets" / "workload-secret-seed").exists()
    # A leftover temp file from a crash is cleaned up, and rewriting works over 0444 files.
    (tmp_path / "tls-config" / ".mesh-ca.pem.tmp-1").write_bytes(b"partial")
    write_mesh_files(tmp_path, key, material)
    assert sorted(p.name for p in (tmp_path / "tls-config").iterdir()) == [
        ".mesh-ca.pem.tmp-1", "certChain.pem", "coordinator-root-ca.pem", "key.pem", "mesh-ca.pem"]


def test_write_done_failure_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError):
        write_done(tmp_path / "file" / "done")  # parent is a regular file
    assert [p.name for p in tmp_path.iterdir()] == ["file"]



@pytest.mark.root
def test_default_deny_removed_in_netns() -> None:
    # Both families: the pod image denies IPv4 and IPv6 (meshproxy default-deny install); a mesh-disabled
    # pod must get both back, and a pod with the mesh must never have only one of them removed.
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    ipt = shutil.which("iptables-legacy") or shutil.which("iptables")
    unshare = shutil.which("unshare")
    if ipt is None or unshare is None or shutil.which("ip6tables-legacy") is None:
        pytest.skip("iptables, ip6tables or unshare not installed")
    ip6t = ipt.replace("iptables", "ip6tables")
    script = (
        f"{sys.executable} -m meshproxy default-deny install && {ipt} -w -S INPUT && {ip6t} -w -S INPUT && "
        f"{sys.executable} -c 'from initializer.defaultdeny import remove_default_deny as r; "
        f"print(r(), r())' && {ipt} -w -S INPUT && {ip6t} -w -S INPUT"
    )
    out = subprocess.run([unshare, "-n", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    if out.returncode != 0 and "Permission denied" in out.stderr:
        pytest.skip(f"no netns here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    removed = lines.index("True False")
    assert sum("-j DROP" in line for line in lines[:removed]) == 2, lines  # one per family
    assert not any("DROP" in line for line in lines[removed:]), lines


def test_remove_default_deny_without_iptables() -> None:
    from initializer.defaultdeny import DefaultDenyError

    with pytest.raises(DefaultDenyError):
        remove_default_deny("/nonexistent/iptables")
