"""Benchmark: dm-verity tree build (and verify) of a 1 GiB file, image.verity vs ``veritysetup``.

    .venv/bin/python -m tools.bench.verity [--size-mib 1024] [--repeat 3] [--data PATH] [--nice -10]

Every row is a fresh process run on the same page-cached random input with the same salt and
UUID: ``veritysetup format``, ``python -m image verity format --workers=1`` and ``--workers=2``,
then the matching ``verify`` runs. The hash files of all format rows must be byte-identical (checked).
Rounds are interleaved; the table shows the best and the median wall time of ``--repeat`` rounds
(throughput and ratio from the best), because the machine may be shared. Memory, sampled every
20 ms: peak of the summed PSS of the process tree (PSS so that pages shared by forked workers
count once) and the largest RSS of any one process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "confidential-guest" / "bench-verity"
SALT = "5a" * 32
UUID = "12345678-1234-1234-1234-123456789abc"


@dataclass
class Sample:
    wall: float
    cpu: float
    peak_pss: int
    max_rss: int
    stdout: str


@dataclass
class Row:
    label: str
    argv: list[str]
    output: Path | None
    samples: list[Sample] = field(default_factory=list)


def _tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(summed PSS, largest RSS) over the process and its children."""
    total = largest = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += info.pss
        largest = max(largest, info.rss)
    return total, largest


def run(argv: list[str], out_path: Path) -> Sample:
    """Run one command: wall time; CPU from wait4 (includes its reaped workers); memory sampled.

    (wait4's ru_maxrss is useless here: a forked child inherits the parent's high-water mark.)"""
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(out_path.with_suffix(".err"), "wb") as err:
        popen = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)
    proc = psutil.Process(popen.pid)
    peak = largest = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, largest
        while not stop.is_set():
            try:
                pss, rss = _tree_memory(proc)
            except psutil.Error:
                pass
            else:
                peak, largest = max(peak, pss), max(largest, rss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(popen.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    popen.returncode = os.waitstatus_to_exitcode(status)
    if popen.returncode != 0:
        err_text = out_path.with_suffix(".err").read_text(errors="replace")
        raise SystemExit(f"{' '.join(argv)} failed:\n{err_text}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, peak, largest,
                  out_path.read_text(errors="replace"))


def ensure_data(size_mib: int, path: Path | None) -> Path:
    data = path if path is not None else CACHE / f"random-{size_mib}MiB.bin"
    if path is None and (not data.exists() or data.stat().st_size != size_mib << 20):
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"generating {data} ...", file=sys.stderr)
        tmp = data.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
        tmp.rename(data)
    with open(data, "rb") as f:  # warm the page cache so every row reads from memory
        while f.read(16 << 20):
            pass
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="use this file instead of cached random data")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for all rows alike (e.g. -10 as root on a shared machine)")
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)
    veritysetup = shutil.which("veritysetup") or "/usr/sbin/veritysetup"
    data = ensure_data(args.size_mib, args.data)
    size = data.stat().st_size
    py = [sys.executable, "-m", "image", "verity"]
    common = [f"--salt={SALT}", f"--uuid={UUID}"]
    with tempfile.TemporaryDirectory(prefix="bench-verity-") as tmp_name:
        tmp = Path(tmp_name)
        fmt = [
            Row("veritysetup format", [veritysetup, "format", str(data), str(tmp / "v.hash"), *common],
                tmp / "v.hash"),
            Row("image verity format, 1 worker", [*py, "format", str(data), str(tmp / "o1.hash"), *common,
                                                  "--workers=1"], tmp / "o1.hash"),
            Row("image verity format, 2 workers", [*py, "format", str(data), str(tmp / "o2.hash"), *common,
                                                   "--workers=2"], tmp / "o2.hash"),
        ]
        for _ in range(args.repeat):
            for row in fmt:
                if row.output is not None and row.output.exists():
                    row.output.unlink()
                row.samples.append(run(row.argv, tmp / "out"))
        reference = (tmp / "v.hash").read_bytes()
        for row in fmt[1:]:
            if row.output is None or row.output.read_bytes() != reference:
                raise SystemExit(f"{row.label}: hash file differs from veritysetup's")
        root = next(line.split("\t")[1] for line in fmt[0].samples[0].stdout.splitlines()
                    if line.startswith("Root hash"))
        ver = [
            Row("veritysetup verify", [veritysetup, "verify", str(data), str(tmp / "v.hash"), root], None),
            Row("image verity verify, 1 worker", [*py, "verify", str(data), str(tmp / "v.hash"), root,
                                                  "--workers=1"], None),
            Row("image verity verify, 2 workers", [*py, "verify", str(data), str(tmp / "v.hash"), root,
                                                   "--workers=2"], None),
        ]
        for _ in range(args.repeat):
            for row in ver:
                row.samples.append(run(row.argv, tmp / "out"))
    print(f"dm-verity, {size >> 20} MiB random data (page cache), sha256 4096/4096, best of {args.repeat}; "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}, nice {os.nice(0)}")
    header = (f"{'run':34} {'wall s':>7} {'median':>7} {'MB/s':>7} {'x vs':>6} {'CPU s':>6} "
              f"{'peak PSS MB':>12} {'max RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for group in (fmt, ver):
        base = min(s.wall for s in group[0].samples)
        for row in group:
            best = min(row.samples, key=lambda s: s.wall)
            median = statistics.median(s.wall for s in row.samples)
            print(f"{row.label:34} {best.wall:7.2f} {median:7.2f} {size / best.wall / 1e6:7.0f} "
                  f"{base / best.wall:6.2f} {best.cpu:6.2f} "
                  f"{max(s.peak_pss for s in row.samples) / 1e6:12.1f} "
                  f"{max(s.max_rss for s in row.samples) / 1e6:11.1f}")

if __name__ == "__main__":
    main()
