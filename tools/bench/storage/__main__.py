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
METRICS = ("seq_write_MiBps", "seq_read_MiBps", "rand4k_write_iops", "rand4k_read_iops")


def main() -> None:
    reason = qemu_available()
    if reason:
        raise SystemExit(f"skipped: {reason}")
    work = Path(tempfile.mkdtemp(prefix="cg-bench-storage-"))
    try:
        image = work / "image"
        build_image(BuildOptions(out=image, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
        disk = work / "bench.img"
        with open(disk, "wb") as f:
            f.truncate(DISK_SIZE)
        run = run_in_guest(image, ["tools/bench/storage/guest_bench.py::test_bench"],
                           disks=[Disk(disk, "cg-bench", readonly=False)])
        rows = [json.loads(m) for m in re.findall(r"MARK bench (\{.*\})", run.console)]
        result = run.results.get("tools/bench/storage/guest_bench.py::test_bench", {})
        if result.get("outcome") != "passed":
            raise SystemExit(f"guest bench failed: {run.error} {result.get('longrepr', '')}\n"
                             f"{run.console[-3000:]}")
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


if __name__ == "__main__":
    main()
