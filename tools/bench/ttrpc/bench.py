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
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
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
        with contextlib.ExitStack() as stack:
            stack.enter_context(process([str(peers.server), "-sock", str(go_sock)]))
            for uv in loops:
                tag = "uvloop" if uv else "asyncio"
                stack.enter_context(process(py("serve", f"unix://{py_sock}-{tag}", uvloop=uv)))
                stack.enter_context(
                    process(py("proxy", f"unix://{proxy_sock}-{tag}", f"unix://{go_sock}", uvloop=uv))
                )
            # Every round runs all cases back to back, so that ratios and differences can be taken within a
            # round: the machine is shared and its speed drifts between rounds.
            for _ in range(args.rounds):
                for conc, n in ((1, args.seq_calls), (16, args.calls)):
                    record(f"Go client → Go server|{conc}", go_bench(peers, go_sock, conc, n))
                    for uv in loops:
                        tag = "uvloop" if uv else "asyncio"
                        label = " (uvloop)" if uv else ""
                        sock = Path(f"{py_sock}-{tag}")
                        record(f"Go client → our server{label}|{conc}", go_bench(peers, sock, conc, n))
                        record(f"our client → our server{label}|{conc}", py_bench(sock, conc, n))
                        record(
                            f"Go client → our proxy{label} → Go server|{conc}",
                            go_bench(peers, Path(f"{proxy_sock}-{tag}"), conc, n),
                        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str) -> Run:
        runs = results[name]
        return Run(*(statistics.median(getattr(r, f) for r in runs) for f in ("rate", "p50_us", "p99_us")))

    def paired(name: str, conc: int, f: Callable[[Run, Run], float]) -> float:
        """Median over rounds of f(this case, Go client → Go server in the same round)."""
        base = results[f"Go client → Go server|{conc}"]
        return statistics.median(f(r, b) for r, b in zip(results[f"{name}|{conc}"], base, strict=True))

    print(
        f"ttrpc benchmark: unary Echo, 16-byte payload, unix sockets, {os.cpu_count()} CPUs, "
        f"median of {args.rounds} rounds (ratios and differences paired within each round)"
    )
    print(f"{'case':<44} {'callers':>7} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8}  note")
    names = list(dict.fromkeys(k.split("|")[0] for k in results))
    for name in names:
        for conc in (1, 16):
            r = med(f"{name}|{conc}")
            note = ""
            if name.startswith("Go client → our server"):
                need = 0.9 if conc == 1 else 1.0
                ratio = paired(name, conc, lambda a, b: a.rate / b.rate)
                note = f"{ratio:.2f}× Go server (target ≥{need}×)"
            elif "proxy" in name:
                d50 = paired(name, conc, lambda a, b: a.p50_us - b.p50_us)
                d99 = paired(name, conc, lambda a, b: a.p99_us - b.p99_us)
                note = f"adds p50 {d50:+.0f} µs, p99 {d99:+.0f} µs" + (
                    " (target ≤50 / ≤1000)" if conc == 16 else ""
                )
            print(f"{name:<44} {conc:>7} {r.rate:>9.0f} {r.p50_us:>8.0f} {r.p99_us:>8.0f}  {note}")
    return 0
