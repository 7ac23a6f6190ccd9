"""Mesh proxy benchmark: ``python -m tools.bench.mesh [--rounds N] [--gib G] [--rr N]`` (root).

Two network namespaces joined by a veth pair, as two pods. Pod B runs a plaintext backend (sink + echo),
our proxy with the real TPROXY rules, and haproxy and stunnel4 configured for the same mTLS (TLS 1.3,
client certificate required, single-threaded) in front of the same backend. Pod A runs the client
(1 GiB in 1 MiB writes; 64-byte request/response round trips). Rows run interleaved
for ``--rounds`` rounds; the table shows the median of the rounds. Then RSS of our proxy, idle and with 100
concurrent mTLS connections open. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PY = str(REPO / ".venv" / "bin" / "python")
HERE = Path(__file__).resolve().parent
A_IP, B_IP = "10.93.0.1", "10.93.0.2"
TARGETS = {"haproxy": 1.0, "stunnel4": None}


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def make_pki(directory: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO))
    from tests.meshproxy.mesh_pki import MeshPKI  # the same Contrast-shaped PKI the tests use

    pki = MeshPKI.create("bench")
    return pki.write_workload(directory / "a", "client"), pki.write_workload(directory / "b", "server")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children so far."""
    fields = Path(f"/proc/{_child_pid(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.mesh")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rr", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=100)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, TPROXY)", file=sys.stderr)
        return 2
    for tool in ("haproxy", "stunnel4"):
        if not shutil.which(tool):
            print(f"{tool} missing: apt-get install haproxy stunnel4", file=sys.stderr)
            return 2
    tag = str(os.getpid())
    na, nb = f"mbench-a{tag}", f"mbench-b{tag}"
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="meshbench-"))
    try:
        sh("ip", "netns", "add", na)
        sh("ip", "netns", "add", nb)
        sh("ip", "link", "add", f"mbva{tag}", "type", "veth", "peer", "name", f"mbvb{tag}")
        for n, dev, ip in ((na, f"mbva{tag}", A_IP), (nb, f"mbvb{tag}", B_IP)):
            sh("ip", "link", "set", dev, "netns", n)
            sh("ip", "-n", n, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", n, "link", "set", "lo", "up")
            sh("ip", "-n", n, "link", "set", dev, "up")
        a_dir, b_dir = make_pki(work)
        (work / "server-combined.pem").write_bytes(
            (b_dir / "certChain.pem").read_bytes() + (b_dir / "key.pem").read_bytes()
        )
        tls_opts = f"ca-file {b_dir}/mesh-ca.pem verify required ssl-min-ver TLSv1.3"
        (work / "haproxy.cfg").write_text(f"""global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend tp
  bind 0.0.0.0:8441 ssl crt {work}/server-combined.pem {tls_opts}
  default_backend sink
frontend rr
  bind 0.0.0.0:8442 ssl crt {work}/server-combined.pem {tls_opts}
  default_backend echo
backend sink
  server s1 127.0.0.1:9001
backend echo
  server e1 127.0.0.1:9002
""")
        stunnel_sections = "".join(
            f"""[{name}]
accept = 0.0.0.0:{port}
connect = 127.0.0.1:{backend}
cert = {b_dir}/certChain.pem
key = {b_dir}/key.pem
CAfile = {b_dir}/mesh-ca.pem
verifyChain = yes
sslVersionMin = TLSv1.3
"""
            for name, port, backend in (("tp", 8461, 9001), ("rr", 8462, 9002))
        )
        (work / "stunnel.conf").write_text(
            "foreground = yes\npid =\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n" + stunnel_sections
        )

        def spawn(
            argv: list[str], env: dict[str, str] | None = None, log: str | None = None
        ) -> subprocess.Popen[bytes]:
            out = open(work / log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
            p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append(p)
            return p

        spawn(ns(nb, PY, str(HERE / "backend.py"), "9001,9011", "9002,9012"))
        haproxy = spawn(ns(nb, "haproxy", "-f", str(work / "haproxy.cfg")), log="haproxy.log")
        stunnel = spawn(ns(nb, "stunnel4", str(work / "stunnel.conf")), log="stunnel.log")
        plain = "##".join(f"p{p}#{p}#true" for p in (8441, 8442, 8461, 8462, 9011, 9012))
        env = dict(os.environ, CONTRAST_INGRESS_PROXY_CONFIG=plain, PYTHONPATH=str(REPO))
        ready = work / "ready"
        profile = (
            ["-m", "cProfile", "-o", os.environ["MESHBENCH_PROFILE"]]
            if "MESHBENCH_PROFILE" in os.environ
            else []
        )
        ours = spawn(
            ns(
                nb,
                PY,
                *profile,
                "-m",
                "meshproxy",
                "--tls-dir",
                str(b_dir),
                "--ready-file",
                str(ready),
                "-l",
                "warning",
            ),
            env=env,
            log="meshproxy.log",
        )
        deadline = time.monotonic() + 20
        while not ready.exists():
            if time.monotonic() > deadline or ours.poll() is not None:
                print((work / "meshproxy.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        time.sleep(1.0)  # haproxy/stunnel startup
        servers = {"haproxy (TLS)": haproxy, "stunnel4 (TLS)": stunnel, "meshproxy (TLS, TPROXY)": ours}
        rows = {
            "direct plaintext": (9011, 9012, "plain"),
            "haproxy (TLS)": (8441, 8442, "tls"),
            "stunnel4 (TLS)": (8461, 8462, "tls"),
            "meshproxy (TLS, TPROXY)": (9001, 9002, "tls"),
        }
        results: dict[str, list[dict[str, float]]] = {k: [] for k in rows}
        for _ in range(args.rounds):
            for name, (tp, rr, mode) in rows.items():
                row: dict[str, float] = {}
                for ports in ((tp, 0), (0, rr)):
                    before = {k: cpu_seconds(p.pid) for k, p in servers.items()}
                    proc = subprocess.run(
                        ns(
                            na,
                            PY,
                            str(HERE / "client.py"),
                            B_IP,
                            str(ports[0]),
                            str(ports[1]),
                            mode,
                            str(a_dir),
                            str(args.gib),
                            str(args.rr),
                        ),
                        capture_output=True,
                        text=True,
                        timeout=600,
                        check=False,
                    )
                    if proc.returncode != 0:
                        print(f"{name}: client failed: {proc.stderr[-500:]}", file=sys.stderr)
                        return 1
                    row.update(json.loads(proc.stdout))
                    if name in servers:
                        used = cpu_seconds(servers[name].pid) - before[name]
                        if ports[0]:
                            row["cpu_s_per_gib"] = used / args.gib
                        else:
                            row["cpu_us_per_rr"] = used / (args.rr + 500) * 1e6
                results[name].append(row)
        idle_rss = rss_kib(_child_pid(ours.pid))
        loaded_rss, stunnel_rss = _rss_under_load(na, a_dir, args.conns, ours.pid, stunnel.pid)
        print_table(results, args, idle_rss, loaded_rss, stunnel_rss)
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(["ip", "netns", "del", na], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", nb], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _child_pid(pid: int) -> int:
    """``ip netns exec`` execs the command, so the pid is the process itself; follow a child if any."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid


def _rss_under_load(na: str, a_dir: Path, conns: int, ours: int, stunnel: int) -> tuple[int, int]:
    # Hold `conns` mTLS connections open through our proxy (and stunnel) from pod A, each having done one
    # echo, and sample RSS while they are open.
    script = f"""
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False
ctx.load_verify_locations("{a_dir}/mesh-ca.pem")
ctx.load_cert_chain("{a_dir}/certChain.pem", "{a_dir}/key.pem")
held = []
for port in (9002, 8462):
    for _ in range({conns}):
        s = ctx.wrap_socket(socket.create_connection(("{B_IP}", port)))
        s.sendall(b"x" * 64); assert len(s.recv(64, socket.MSG_WAITALL)) == 64 if False else s.recv(64)
        held.append(s)
print("open", flush=True)
sys.stdin.readline()
"""
    proc = subprocess.Popen(ns(na, PY, "-c", script), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    time.sleep(0.5)
    result = rss_kib(_child_pid(ours)), rss_kib(_child_pid(stunnel))
    proc.stdin.write(b"\n")
    proc.stdin.close()
    proc.wait(timeout=30)
    return result


def print_table(
    results: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    idle: int,
    loaded: int,
    stunnel_loaded: int,
) -> None:
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("mbps", "p50_us", "p99_us")}
        for k, v in results.items()
    }
    direct = med["direct plaintext"]["p50_us"]
    hap = med["haproxy (TLS)"]
    print(
        f"\nmeshproxy benchmark: {args.rounds} interleaved rounds (median), {args.gib} GiB, "
        f"{args.rr} x 64 B round trips, TLS 1.3 mTLS P-256, pod A -> veth -> pod B; "
        f"python {sys.version.split()[0]}, "
        f"{ssl.OPENSSL_VERSION}, {os.cpu_count()} CPUs"
    )
    print(
        "| path | throughput MB/s (rounds) | x haproxy | proxy CPU s/GiB | rr64 p50 µs | added p50 µs | "
        "x haproxy added | rr64 p99 µs | proxy CPU µs/rr |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in med.items():
        rounds = " / ".join(f"{r['mbps']:.0f}" for r in results[name])
        added = m["p50_us"] - direct
        hap_added = hap["p50_us"] - direct
        cpu = [r["cpu_s_per_gib"] for r in results[name] if "cpu_s_per_gib" in r]
        cpu_text = f"{statistics.median(cpu):.2f}" if cpu else "-"
        cpu_rr = [r["cpu_us_per_rr"] for r in results[name] if "cpu_us_per_rr" in r]
        cpu_rr_text = f"{statistics.median(cpu_rr):.1f}" if cpu_rr else "-"
        print(
            f"| {name} | {m['mbps']:.0f} ({rounds}) | {m['mbps'] / hap['mbps']:.2f} | {cpu_text} | "
            f"{m['p50_us']:.1f} | "
            f"{added:+.1f} | {(added / hap_added if hap_added > 0 else float('nan')):.2f} | "
            f"{m['p99_us']:.1f} | "
            f"{cpu_rr_text} |"
        )
    print(
        f"| meshproxy RSS | idle {idle / 1024:.1f} MiB | {args.conns} conns {loaded / 1024:.1f} MiB | "
        f"stunnel4 at {args.conns} conns {stunnel_loaded / 1024:.1f} MiB | | | | | |"
    )
    print("targets: throughput >= 0.8x haproxy; added p50 <= 1.5x haproxy's; RSS <= 40 MB at 100 connections")


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
