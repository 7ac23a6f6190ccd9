"""Test harness: a real `python -m coordinator --simulate-tee` process, initdata documents, the CLI."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.simulation import SIMULATED_SNP_REFERENCE_VALUES

REPO = Path(__file__).resolve().parents[2]
SIMULATED_REFERENCE_VALUES = SIMULATED_SNP_REFERENCE_VALUES  # what `contrast generate --simulate-tee` writes


def initdata(name: str) -> bytes:
    rego = f"package agent_policy\n# {name}\ndefault CreateContainerRequest := true\n"
    head = 'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
    return (head + '"policy.rego" = """\n' + rego + '"""\n').encode()


@dataclass
class CoordinatorProcess:
    state_dir: Path
    sim_root: Path
    initdata_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    module: str = "coordinator"  # tests.coordinator.hostile_peer: the host's own VM
    ports: dict[str, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    # False: the Coordinator runs as a user would start it, without $ATTESTATION_SIMULATED_ROOT, so its
    # simulated root is <state_dir>/simulated-amd (pass that as sim_root).
    export_sim_root: bool = True

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("ATTESTATION_SIMULATED_ROOT", None)
        if self.export_sim_root:
            env["ATTESTATION_SIMULATED_ROOT"] = str(self.sim_root)
        return env

    def start(self, timeout: float = 30) -> None:
        argv = [
            sys.executable, "-m", self.module, "--state-dir", str(self.state_dir), "--simulate-tee",
            "--simulate-initdata", str(self.initdata_path), "--listen-host", "127.0.0.1",
            "--user-port", "0", "--mesh-port", "0", "--http-port", "0", "--probe-port", "0",
            "--transit-port", "0", *self.extra_args,
        ]
        with open(os.environ.get("COORD_LOG", os.devnull), "ab") as log:  # COORD_LOG=file keeps the logs
            self.proc = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode()
                if not line:
                    break
                pattern = r"ready userapi=(\d+) meshapi=(\d+) http=(\d+) probes=(\d+) transit=(\d+)"
                if m := re.match(pattern, line):
                    names = ("user", "mesh", "http", "probes", "transit")
                    self.ports = dict(zip(names, map(int, m.groups()), strict=True))
                    return
        self.stop()
        raise RuntimeError("coordinator did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    @property
    def user(self) -> str:
        return f"127.0.0.1:{self.ports['user']}"

    @property
    def mesh(self) -> str:
        return f"127.0.0.1:{self.ports['mesh']}"

    def http(self, port_name: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[port_name]}{path}", data=body,
                                     headers=headers or {}, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def write_reference_values(path: Path) -> Path:
    path.write_text(json.dumps(SIMULATED_REFERENCE_VALUES))
    return path
