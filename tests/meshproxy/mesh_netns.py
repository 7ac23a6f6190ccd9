"""Network-namespace "pods" for the mesh tests: two namespaces joined by a veth pair.

Everything lives inside namespaces this module creates (names carry the test process id) and is removed
by ``Topology.close``; the host's own network is never touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")


def netns_unavailable() -> str | None:
    """Why the netns tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "iptables-legacy", "iptables-restore", "curl", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (see .ci/apt/meshproxy.txt)"
    probe = f"mpprobe{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False).returncode != 0:
        return "cannot create network namespaces"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def sh(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Pod:
    ns: str
    ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(
        self,
        *argv: str,
        check: bool = False,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(*argv), capture_output=True, check=check, timeout=timeout, env=env, input=input
        )

    def spawn(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        if log is not None:
            with open(log, "wb") as out:  # the child keeps its own descriptor
                proc = subprocess.Popen(self.argv(*argv), env=env, stdout=out, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.Popen(
                self.argv(*argv),
                env=env,
                stdout=stdout or subprocess.DEVNULL,
                stderr=stderr or subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    def iptables_save(self, binary: str = "iptables-legacy") -> str:
        return self.run(f"{binary}-save").stdout.decode()


class Topology:
    """Pods ``a`` (client, 10.x.0.1) and ``b`` (server, 10.x.0.2) on one veth link."""

    def __init__(self, tag: str, subnet: int = 77) -> None:
        uid = f"{tag}{os.getpid() % 100000}"
        self.a = Pod(f"mpa-{uid}", f"10.{subnet}.0.1")
        self.b = Pod(f"mpb-{uid}", f"10.{subnet}.0.2")
        self._veth = (f"mpva{os.getpid() % 100000}", f"mpvb{os.getpid() % 100000}")
        try:
            for pod in (self.a, self.b):
                sh("ip", "netns", "add", pod.ns)
            va, vb = self._veth
            sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
            sh("ip", "link", "set", va, "netns", self.a.ns)
            sh("ip", "link", "set", vb, "netns", self.b.ns)
            for pod, dev in ((self.a, va), (self.b, vb)):
                sh("ip", "-n", pod.ns, "addr", "add", f"{pod.ip}/24", "dev", dev)
                sh("ip", "-n", pod.ns, "link", "set", "lo", "up")
                sh("ip", "-n", pod.ns, "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for pod in (self.a, self.b):
            for proc in pod.procs:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            subprocess.run(["ip", "netns", "del", pod.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self._veth[0]], capture_output=True, check=False)


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def meshproxy_argv(tls_dir: Path, ready: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "meshproxy", "--tls-dir", str(tls_dir), "--ready-file", str(ready), *extra]


APP_SERVER = [PYTHON, str(Path(__file__).with_name("mesh_app.py"))]
__all__ = ["APP_SERVER", "PYTHON", "Pod", "Topology", "meshproxy_argv", "netns_unavailable", "sh", "wait_for"]
_ = sys


GO_SOURCE = Path(__file__).with_name("go") / "meshclient.go"


def go_meshclient() -> Path | None:
    """Build the Go TLS peer once per source and Go version, cached outside the repository."""
    go = shutil.which("go")
    if go is None:
        return None
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(GO_SOURCE.read_bytes() + version.encode()).hexdigest()[:20]
    system = Path("/var/cache/confidential-guest/meshproxy-go")
    root = (
        system
        if os.access(system.parent, os.W_OK) or system.exists()
        else Path.home() / ".cache" / "meshproxy-go"
    )
    binary = root / key / "meshclient"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root))
    env = dict(os.environ, GO111MODULE="off", GOCACHE=str(root / "gocache"), GOPATH=str(root / "gopath"))
    build = subprocess.run(
        [go, "build", "-o", str(tmp / "meshclient"), str(GO_SOURCE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if build.returncode != 0:
        raise RuntimeError(f"go build failed: {build.stderr[-2000:]}")
    try:
        os.rename(tmp, root / key)  # a complete cache entry appears at once, or not at all
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run won the race
    return binary
