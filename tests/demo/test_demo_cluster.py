"""`python -m tools.demo`, the README's first command, run whole as a user runs it (root, TCG pod VMs):
the report checked step by step, every attack really attempted and failing for the right reason, a
second run reusing the image caches, `--keep` + `down` and Ctrl-C leaving nothing behind (processes,
network namespaces, mounts, temporary directories)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import shared_path

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("images", "containerd", "registry", "generate", "coordinator", "set", "verify", "pods", "certs",
            "mesh", "attack-exec", "attack-changed-yaml", "attack-image-byte", "attack-unlisted-pod",
            "attack-plaintext")
RUN_TIMEOUT = 1500  # the whole demo under TCG on a loaded 2-core machine, bounded

pytestmark = [pytest.mark.root, pytest.mark.vm]


def _unavailable() -> str | None:
    from tools.vm.containerd import containerd_missing
    from tools.vm.qemu import qemu_available
    from tools.vm.registry import unavailable

    return containerd_missing(cni=True) or unavailable() or qemu_available()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    return {**os.environ, "PYTHONPATH": str(REPO), "CG_DEMO_KATA": str(shared_path("kata-policy", "kata")),
            "CG_DEMO_STATE": str(tmp_path / "state.json")}


def _demo(env: dict[str, str], *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.demo", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _ours(pid: int) -> list[str]:
    """What a demo run with pid ``pid`` could have left: its work dir and containerd root prefixes."""
    return [f"/tmp/cgdemo-{pid}-", f"/tmp/cg-ctd-{pid}-"]


def _left_behind(prefixes: list[str]) -> list[str]:
    left = [str(p) for p in Path("/tmp").iterdir() if any(str(p).startswith(x) for x in prefixes)]
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount {x}" for x in prefixes if x in mounts]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(x.encode() in cmdline for x in prefixes):
                left.append(f"process {entry.name}: {cmdline[:120]!r}")
    return left


def _steps(report: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(report.read_text())
    steps = {s["id"]: s for s in doc["steps"]}
    assert all(set(s) == {"id", "ok", "seconds", "detail"} for s in doc["steps"])
    return steps


def _check_report(steps: dict[str, dict[str, Any]]) -> None:
    failed = {k: v["detail"][:600] for k, v in steps.items() if not v["ok"]}
    assert not failed, failed
    assert set(REQUIRED) <= set(steps)
    assert re.search(r"manifest\.json sha256 [0-9a-f]{16}", steps["generate"]["detail"])
    assert "== generated" in steps["verify"]["detail"]
    assert "certificate written" in steps["certs"]["detail"]
    assert "hello from the store, over mTLS" in steps["mesh"]["detail"]
    assert "ExecProcessRequest is blocked by policy" in steps["attack-exec"]["detail"]
    assert "CreateContainerRequest is blocked by policy" in steps["attack-changed-yaml"]["detail"]
    assert "digest" in steps["attack-image-byte"]["detail"]
    assert "not found in manifest" in steps["attack-unlisted-pod"]["detail"]
    plaintext = steps["attack-plaintext"]["detail"]
    assert "no HTTP" in plaintext or "TLS alert" in plaintext


def test_the_whole_demo_twice_then_keep_and_down(env: dict[str, str], tmp_path: Path) -> None:
    first = _demo(env, "--report", str(tmp_path / "first.json"))
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    _check_report(_steps(tmp_path / "first.json"))
    assert "cleaned up: nothing left" in first.stdout
    assert not Path(env["CG_DEMO_STATE"]).exists()

    second = _demo(env, "--keep", "--report", str(tmp_path / "second.json"))
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    steps = _steps(tmp_path / "second.json")
    _check_report(steps)
    # Warm caches: the pod-VM image and the container images are reused, not rebuilt.
    assert "pod-VM image from cache" in steps["images"]["detail"]
    assert "containers from cache" in steps["images"]["detail"]
    state = json.loads(Path(env["CG_DEMO_STATE"]).read_text())
    prefixes = [state["work"], *state["markers"]]
    assert _left_behind(prefixes), "--keep should leave the deployment running"

    down = _demo(env, "down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _left_behind(prefixes) == []
    assert not Path(env["CG_DEMO_STATE"]).exists()
    print(f"whole demo: first {_steps(tmp_path / 'first.json')['images']['seconds']} s images; "
          f"second run {json.loads((tmp_path / 'second.json').read_text())['seconds']} s")


def test_ctrl_c_while_a_pod_vm_boots_removes_everything(env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tools.demo"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        out.append(line)
        if line.startswith("[coordinator]"):
            time.sleep(3)  # the pod VM is booting: QEMU and the shim are running now
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(out)
    rest, _ = proc.communicate(timeout=300)
    text = "".join(out) + rest
    assert proc.returncode == 130, text[-4000:]
    assert "cleaned up: nothing left" in text, text[-4000:]
    assert _left_behind(_ours(proc.pid)) == []
    assert not Path(env["CG_DEMO_STATE"]).exists()
