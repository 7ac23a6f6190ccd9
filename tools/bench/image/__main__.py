"""Image benchmark: build time (cold / cached), sizes, boot to "agent listening" under TCG (and KVM
when a probe boot works), verity tree time (image.verity vs veritysetup) on the root disk.

Run: ``.venv/bin/python -m tools.bench.image [--boots N]``. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from image.build import BuildOptions, ImageDescription, build_image
from tools.vm.qemu import BootTimeoutError, SerialPort, VirtualMachine, qemu_available

REPO = Path(__file__).resolve().parents[3]


def _boot(image: Path, accel: str, timeout: float, agent: str = "echo") -> float:
    """Host seconds from qemu start to the agent listening (echo stand-in or the policy proxy)."""
    mark = r"MARK agent-listening" if agent == "echo" else r"event=serving listen=vsock"
    with VirtualMachine(image, accel=accel, extra_cmdline=f"cg.agent={agent}",
                        ports=[SerialPort("cg.hvsock")]) as vm:
        vm.wait_for(mark, timeout)
        return time.monotonic() - vm.started_at


def _kvm_usable(image: Path) -> str:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no /dev/kvm"
    try:
        _boot(image, "kvm", 15)
    except BootTimeoutError:
        return "probe boot hung (nested PVM host?)"
    return ""


def _verity_compare(image: Path, work: Path) -> tuple[float, float]:
    from image import verity

    desc = ImageDescription.load(image / "image.json")
    data = work / "data.img"
    with open(image / desc.disk, "rb") as src, open(data, "wb") as dst:
        dst.write(src.read(desc.verity.hash_offset))
    params = verity.VerityParams(salt=bytes.fromhex(desc.salt), superblock=False)
    t = time.monotonic()
    verity.format_hash_tree(data, work / "ours.hash", params)
    ours = time.monotonic() - t
    t = time.monotonic()
    subprocess.run(["veritysetup", "format", "--no-superblock", f"--salt={desc.salt}", str(data),
                    str(work / "theirs.hash")], check=True, capture_output=True)
    return ours, time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--boots", type=int, default=3)
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="cg-bench-image-") as d:
        work = Path(d)
        cache = work / "cache"
        t = time.monotonic()
        desc = build_image(BuildOptions(out=work / "cold", repo=REPO, cache_dir=cache, quiet=True))
        rows.append(("build, cold (no cache)", f"{time.monotonic() - t:.1f} s"))
        t = time.monotonic()
        build_image(BuildOptions(out=work / "warm", repo=REPO, cache_dir=cache, quiet=True))
        rows.append(("build, cached (inputs digest hit)", f"{time.monotonic() - t:.1f} s"))
        image = work / "cold"
        for name in (desc.disk, desc.initrd, desc.kernel):
            rows.append((f"size {name}", f"{(image / name).stat().st_size / 2**20:.1f} MiB"))
        rows.append(("verity data blocks", str(desc.verity.data_blocks)))
        if shutil.which("veritysetup"):
            ours, theirs = _verity_compare(image, work)
            rows.append(("verity tree on root disk: image.verity", f"{ours:.2f} s"))
            rows.append(("verity tree on root disk: veritysetup format", f"{theirs:.2f} s"))
        reason = qemu_available()
        if reason:
            rows.append(("boot", f"skipped: {reason}"))
        else:
            for agent in ("echo", "policy-proxy"):
                times = [_boot(image, "tcg", 180, agent) for _ in range(args.boots)]
                rows.append((f"boot to agent listening, TCG, {agent} (n={args.boots})",
                             " / ".join(f"{x:.2f}" for x in times) + " s"))
            why = _kvm_usable(image)
            if why:
                rows.append(("boot to agent listening, KVM", f"n/a: {why}"))
            else:
                host_kvm = _boot(image, "kvm", 60)
                rows.append(("boot to agent listening, KVM", f"{host_kvm:.2f} s"))
        load = os.getloadavg()[0]
        rows.append(("host load average (1 min) at end", f"{load:.2f} on {os.cpu_count()} CPUs"))
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
