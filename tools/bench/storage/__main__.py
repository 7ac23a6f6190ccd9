"""Storage benchmark: sequential (1 MiB) and 4 KiB random O_DIRECT write/read on one virtio disk in
one pod VM (TCG), plain and through the encrypted volume (LUKS2 aes-xts + hmac-sha256 over
dm-integrity, with and without its journal); format and open time at pod start.

Run: ``.venv/bin/python -m tools.bench.storage``. Prints one table (ratios against plain).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from image.build import BuildOptions, build_image, default_cache_dir
from tools.vm.guest_tests import run_in_guest
from tools.vm.qemu import Disk, qemu_available

REPO = Path(__file__).resolve().parents[3]
DISK_SIZE = 96 << 20
BIG_DISK_SIZE = 64 << 30  # sparse: what an ephemeral volume's first use writes is what it allocates
METRICS = ("seq_write_MiBps", "seq_read_MiBps", "rand4k_write_iops", "rand4k_read_iops")


def main() -> None:
    reason = qemu_available()
    if reason:
        raise SystemExit(f"skipped: {reason}")
    work = Path(tempfile.mkdtemp(prefix="cg-bench-storage-"))
    try:
        image = work / "image"
        build_image(BuildOptions(out=image, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
        disk, big = work / "bench.img", work / "big.img"
        for path, size in ((disk, DISK_SIZE), (big, BIG_DISK_SIZE)):
            with open(path, "wb") as f:
                f.truncate(size)
        tests = ["tools/bench/storage/guest_bench.py::test_bench",
                 "tools/bench/storage/guest_bench.py::test_bench_ephemeral"]
        run = run_in_guest(image, tests, disks=[Disk(disk, "cg-bench", readonly=False),
                                                Disk(big, "cg-bench-big", readonly=False)])
        rows = [json.loads(m) for m in re.findall(r"MARK bench (\{.*\})", run.console)]
        for test in tests:
            result = run.results.get(test, {})
            if result.get("outcome") != "passed":
                raise SystemExit(f"guest bench failed: {run.error} {result.get('longrepr', '')}\n"
                                 f"{run.console[-3000:]}")
        big_allocated = big.stat().st_blocks * 512
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r["config"]: r for r in rows}
    plain = by["plain"]
    print(f"{'config':24} " + " ".join(f"{m:>20}" for m in METRICS) + f" {'open':>8}")
    for name in ("plain", "encrypted, journal", "encrypted, no journal"):
        r = by[name]
        cells = []
        for m in METRICS:
            ratio = "" if name == "plain" else f" ({r[m] / plain[m]:.2f}x)"
            cells.append(f"{r[m]:.1f}{ratio}".rjust(20))
        opened = f"{r['open_s']:.2f} s" if "open_s" in r else "-"
        print(f"{name:24} " + " ".join(cells) + f" {opened:>8}")
    f = by["format"]
    print(f"first use: luksFormat + integrity wipe {f['format_s']:.2f} s, mkfs.ext4 {f['mkfs_s']:.2f} s, "
          f"total {f['total_s']:.2f} s ({DISK_SIZE >> 20} MiB disk)")
    for serial, size in (("cg-bench", DISK_SIZE), ("cg-bench-big", BIG_DISK_SIZE)):
        e = by[f"ephemeral {serial}"]
        extra = f", host file {big_allocated >> 20} MiB allocated" if serial == "cg-bench-big" else ""
        print(f"ephemeral first use (emptyDir, image store; no wipe), {size >> 20} MiB disk: luksFormat "
              f"{e['format_s']:.2f} s, mkfs.ext4 {e['mkfs_s']:.2f} s, total {e['total_s']:.2f} s{extra}")


if __name__ == "__main__":
    main()
