"""Network-namespace "pods" for the mesh tests: two namespaces joined by a veth pair.

Each pod is dual-stack, as a generic Kubernetes pod may be: an IPv4 address, a ULA (``fd00:<subnet>::N/64``)
and the link-local address the kernel gives the interface. Duplicate address detection is off inside the
namespaces, so the IPv6 addresses are usable at once instead of after a second of DAD.

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

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")


def netns_unavailable() -> str | None:
    """Why the netns tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "iptables-legacy", "iptables-restore", "ip6tables", "ip6tables-legacy",
                 "ip6tables-restore", "sysctl", "curl", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (see .ci/apt/meshproxy.txt)"
    probe = f"mpprobe{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False).returncode != 0:
        return "cannot create network namespaces"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def netns_marks() -> list[pytest.MarkDecorator]:
    """The marks of a netns test module: root, interop, and a skip naming what is missing."""
    reason = netns_unavailable()
    skip = pytest.mark.skipif(reason is not None, reason=reason or "")
    return [pytest.mark.root, pytest.mark.interop, skip]


def sh(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Pod:
    ns: str
    ip: str
    ip6: str = ""  # the ULA
    dev: str = ""  # the veth end inside the namespace
    link_local: str = ""  # fe80::/64 address of ``dev`` (use with ``scope_id``)
    scope_id: int = 0  # ifindex of ``dev``, the zone of ``link_local``
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

    def ip6tables_save(self, binary: str = "ip6tables-legacy") -> str:
        return self.run(f"{binary}-save").stdout.decode()

    def _learn_link_local(self) -> None:
        """Wait until ``dev`` has a usable (non-tentative) link-local address and record it."""
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            out = sh("ip", "-n", self.ns, "-6", "-o", "addr", "show", "dev", self.dev, "scope", "link").stdout
            if out.strip() and "tentative" not in out:
                self.link_local = out.split()[3].split("/")[0]
                link = sh("ip", "-n", self.ns, "-o", "link", "show", "dev", self.dev).stdout
                self.scope_id = int(link.split(":", 1)[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.ns}: no link-local address on {self.dev}")


class Topology:
    """Pods ``a`` (client, 10.x.0.1, fd00:x::1) and ``b`` (server, 10.x.0.2, fd00:x::2) on one veth link."""

    def __init__(self, tag: str, subnet: int = 77) -> None:
        uid = f"{tag}{os.getpid() % 100000}"
        va, vb = f"mpva{os.getpid() % 100000}", f"mpvb{os.getpid() % 100000}"
        self.a = Pod(f"mpa-{uid}", f"10.{subnet}.0.1", f"fd00:{subnet}::1", va)
        self.b = Pod(f"mpb-{uid}", f"10.{subnet}.0.2", f"fd00:{subnet}::2", vb)
        self._veth = (va, vb)
        try:
            for pod in (self.a, self.b):
                sh("ip", "netns", "add", pod.ns)
            sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
            sh("ip", "link", "set", va, "netns", self.a.ns)
            sh("ip", "link", "set", vb, "netns", self.b.ns)
            for pod in (self.a, self.b):
                for conf in ("default", pod.dev):
                    pod.run("sysctl", "-qw", f"net.ipv6.conf.{conf}.accept_dad=0", check=True)
                sh("ip", "-n", pod.ns, "addr", "add", f"{pod.ip}/24", "dev", pod.dev)
                sh("ip", "-n", pod.ns, "addr", "add", f"{pod.ip6}/64", "dev", pod.dev, "nodad")
                sh("ip", "-n", pod.ns, "link", "set", "lo", "up")
                sh("ip", "-n", pod.ns, "link", "set", pod.dev, "up")
            for pod in (self.a, self.b):
                pod._learn_link_local()
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


def _env(**values: str) -> dict[str, str]:
    """The test's environment without any CONTRAST_* variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRAST_")}
    env.update(values)
    return env


def start_proxy(pod: Pod, tls: Path, ready: Path, env: dict[str, str], log: Path, *extra: str) -> None:
    ready.unlink(missing_ok=True)
    proc = pod.spawn(*meshproxy_argv(tls, ready, "--reload-interval", "0.2", *extra), env=env, log=log)
    if not wait_for(lambda: ready.exists() or proc.poll() is not None, 15) or not ready.exists():
        raise AssertionError(f"proxy in {pod.ns} not ready: {log.read_text()[-2000:]}")


def metrics(pod: Pod, port: int = 9901) -> str:
    return pod.run("curl", "-sS", "-m", "3", f"http://127.0.0.1:{port}/stats/prometheus").stdout.decode()


APP_SERVER = [PYTHON, str(Path(__file__).with_name("mesh_app.py"))]
PROBE = [PYTHON, str(Path(__file__).with_name("mesh_probe.py"))]
__all__ = [
    "APP_SERVER",
    "PROBE",
    "PYTHON",
    "Pod",
    "Topology",
    "meshproxy_argv",
    "metrics",
    "netns_marks",
    "netns_unavailable",
    "sh",
    "start_proxy",
    "wait_for",
]
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
