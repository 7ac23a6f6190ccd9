"""Runs every case in interleaved rounds and prints one table (medians over rounds).

Cases, all unary Echo with a 16-byte payload over unix sockets on this machine:
- calls/s, sequential (1 caller) and 16 concurrent callers on one connection, for
  Go client → Go server, Go client → our server, our client → our server;
- the latency our proxy adds: Go client → our proxy → Go server minus Go client → Go server, p50 and p99,
  sequential and with 16 concurrent callers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from guest.ttrpc import Client, parse_address
from tools.gottrpc import GoPeers, build
from tools.gottrpc.echo import METHOD, SERVICE, request_bytes

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Run:
    rate: float
    p50_us: float
    p99_us: float


@contextmanager
def process(argv: list[str]) -> Iterator[None]:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{argv} did not start: {line!r}")
        yield
    finally:
        p.kill()
        p.wait()


def py(*args: str, uvloop: bool = False) -> list[str]:
    return [sys.executable, "-m", "tools.bench.ttrpc", *args, *(["--uvloop"] if uvloop else [])]


def go_bench(peers: GoPeers, sock: Path, conc: int, n: int) -> Run:
    out = subprocess.run(
        [str(peers.client), "-sock", str(sock), "-mode", "bench", "-n", str(n), "-c", str(conc)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return Run(r["rate"], r["p50_ns"] / 1e3, r["p99_ns"] / 1e3)


async def _py_bench(sock: Path, conc: int, n: int) -> Run:
    c = await Client().connect(parse_address(f"unix://{sock}"))
    payload = request_bytes("bench", b"x" * 16)
    for _ in range(200):
        await c.call(SERVICE, METHOD, payload)
    lat: list[float] = []

    async def caller(k: int) -> None:
        for _ in range(k):
            t0 = time.perf_counter()
            await c.call(SERVICE, METHOD, payload)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(n // conc) for _ in range(conc)))
    elapsed = time.perf_counter() - t0
    await c.close()
    lat.sort()
    return Run(len(lat) / elapsed, lat[len(lat) // 2] * 1e6, lat[int(0.99 * (len(lat) - 1))] * 1e6)


def py_bench(sock: Path, conc: int, n: int) -> Run:
    return asyncio.run(_py_bench(sock, conc, n))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench.ttrpc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=40000, help="calls per run with 16 callers")
    ap.add_argument("--seq-calls", type=int, default=15000, help="calls per sequential run")
    ap.add_argument(
        "--uvloop", action="store_true", help="also run our server/proxy on uvloop (if installed)"
    )
    args = ap.parse_args(argv)
    loops = [False] + ([True] if args.uvloop and importlib.util.find_spec("uvloop") else [])
    peers = build()
    tmp = Path(tempfile.mkdtemp(prefix="ttrpc-bench-"))
    go_sock, py_sock, proxy_sock = tmp / "go.sock", tmp / "py.sock", tmp / "proxy.sock"
    results: dict[str, list[Run]] = {}

    def record(name: str, run: Run) -> None:
        results.setdefault(name, []).append(run)

    try:
        with process([str(peers.server), "-sock", str(go_sock)]):
            for _ in range(args.rounds):
                for conc, n in ((1, args.seq_calls), (16, args.calls)):
                    record(f"Go client → Go server|{conc}", go_bench(peers, go_sock, conc, n))
                for uv in loops:
                    tag = " (uvloop)" if uv else ""
                    with process(py("serve", f"unix://{py_sock}", uvloop=uv)):
                        for conc, n in ((1, args.seq_calls), (16, args.calls)):
                            record(f"Go client → our server{tag}|{conc}", go_bench(peers, py_sock, conc, n))
                            record(f"our client → our server{tag}|{conc}", py_bench(py_sock, conc, n))
                    with process(py("proxy", f"unix://{proxy_sock}", f"unix://{go_sock}", uvloop=uv)):
                        for conc, n in ((1, args.seq_calls), (16, args.calls)):
                            record(
                                f"Go client → our proxy{tag} → Go server|{conc}",
                                go_bench(peers, proxy_sock, conc, n),
                            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str) -> Run:
        runs = results[name]
        return Run(*(statistics.median(getattr(r, f) for r in runs) for f in ("rate", "p50_us", "p99_us")))

    print(
        f"ttrpc benchmark: unary Echo, 16-byte payload, unix sockets, {os.cpu_count()} CPUs, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"{'case':<44} {'callers':>7} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8}  note")
    names = list(dict.fromkeys(k.split("|")[0] for k in results))
    go = {c: med(f"Go client → Go server|{c}") for c in (1, 16)}
    for name in names:
        for conc in (1, 16):
            r = med(f"{name}|{conc}")
            note = ""
            if name.startswith("Go client → our server"):
                need = 0.9 if conc == 1 else 1.0
                ratio = r.rate / go[conc].rate
                note = f"{ratio:.2f}× Go server (target ≥{need}×)"
            elif "proxy" in name:
                note = (
                    f"adds p50 {r.p50_us - go[conc].p50_us:+.0f} µs, p99 {r.p99_us - go[conc].p99_us:+.0f} µs"
                    + (" (target ≤50 / ≤1000)" if conc == 16 else "")
                )
            print(f"{name:<44} {conc:>7} {r.rate:>9.0f} {r.p50_us:>8.0f} {r.p99_us:>8.0f}  {note}")
    return 0
