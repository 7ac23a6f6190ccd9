"""Benchmark: SNP launch digest of our built image, image.measure vs the sev-snp-measure CLI.

    .venv/bin/python -m tools.bench.measure [--image-description DIR/image.json] [--repeat 5]

Inputs: the kernel, initrd and command line of a built image (``python -m image build``; found via
--image-description, $CG_IMAGE_DESCRIPTION or the build cache) and an AmdSev-style firmware of
4 MiB assembled from Debian's OVMF.fd pages with the AmdSevX64 GUID table/metadata suffix from
sev-snp-measure's fixtures (Debian ships no OVMF with SNP_KERNEL_HASHES). Falls back to synthetic
kernel/initrd of the same sizes when no image is built.

Rows (median wall time of --repeat runs, each a fresh process where a CLI is involved):
  1 digest, CLI:   ``python -m image measure snp`` (the dispatcher also imports the other image
                   plug-ins) and ``python -m image.measure snp`` vs ``sev-snp-measure --mode snp``
  1 digest, lib:   image.measure in-process vs sevsnpmeasure.guest.calc_launch_digest in-process
  16 digests:      reference values for 1..8 vCPUs x Milan, Genoa: one ``reference-values`` run
                   (firmware hashed once) vs 16 sev-snp-measure CLI runs (what Contrast's build does)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MEASURE = ROOT / ".." / "shared" / "testdata" / "measure"
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
SUFFIX = MEASURE / "snp" / "ssm-fixtures" / "ovmf_AmdSev_suffix.bin"
FW_SIZE = 4 << 20


def find_image(explicit: str | None) -> Path | None:
    candidates = [explicit, os.environ.get("CG_IMAGE_DESCRIPTION")]
    cache = os.environ.get("CG_IMAGE_CACHE", "/var/cache/confidential-guest/images")
    candidates += sorted(glob.glob(f"{cache}/*/image.json"))
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def build_inputs(work: Path, image: Path | None) -> tuple[Path, Path, Path, str, str]:
    """Firmware, kernel, initrd, cmdline and a label saying where the boot inputs came from."""
    base = DEBIAN_OVMF.read_bytes() if DEBIAN_OVMF.exists() else bytes(2 << 20)
    suffix = SUFFIX.read_bytes()
    body = (base * (FW_SIZE // len(base) + 1))[: FW_SIZE - len(suffix)]
    fw = work / "OVMF-amdsev.fd"
    fw.write_bytes(body + suffix)
    if image is not None:
        desc = json.loads(image.read_text())
        return (
            fw,
            image.parent / desc["kernel"],
            image.parent / desc["initrd"],
            desc["cmdline"],
            f"built image {image}",
        )
    kernel, initrd = work / "vmlinuz", work / "initrd.img"
    kernel.write_bytes(bytes(i * 7 % 256 for i in range(256)) * (14 << 12))
    initrd.write_bytes(bytes(i * 13 % 256 for i in range(256)) * (14 << 10))
    return fw, kernel, initrd, "console=hvc0 root=/dev/dm-0", "synthetic 14 MiB kernel + 3.5 MiB initrd"


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-description")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    ssm = shutil.which("sev-snp-measure", path=str(Path(sys.executable).parent)) or shutil.which(
        "sev-snp-measure"
    )
    if ssm is None:
        print(
            "sev-snp-measure not installed (pip install sev-snp-measure==0.0.13): nothing to compare",
            file=sys.stderr,
        )
        return 1
    from sevsnpmeasure import guest
    from sevsnpmeasure.sev_mode import SevMode

    from image.measure import BootHashes, parse_firmware, snp_launch_digest

    image = find_image(args.image_description)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fw, kernel, initrd, cmdline, label = build_inputs(work, image)
        common = ["--ovmf", str(fw), "--kernel", str(kernel), "--initrd", str(initrd), "--append", cmdline]
        ours_cmd = [
            sys.executable,
            "-m",
            "image",
            "measure",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Milan",
            *common,
        ]
        ssm_cmd = [ssm, "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-Milan", *common]
        assert run(ours_cmd) == run(ssm_cmd), "digests differ"

        def ours_lib() -> bytes:
            boot = BootHashes.of(kernel.read_bytes(), initrd.read_bytes(), cmdline)
            return snp_launch_digest(parse_firmware(fw.read_bytes()), 1, 0xA00F11, 0x1, boot)

        def ssm_lib() -> bytes:
            out: bytes = guest.calc_launch_digest(
                SevMode.SEV_SNP, 1, 0xA00F11, str(fw), str(kernel), str(initrd), cmdline, 0x1
            )
            return out

        assert ours_lib() == ssm_lib()
        desc = work / "image.json"
        root_hash = "00" * 32
        desc.write_text(
            json.dumps(
                {
                    "kernel": str(kernel),
                    "initrd": str(initrd),
                    "cmdline": f"{cmdline} {root_hash}",
                    "root_hash": root_hash,
                }
            )
        )
        rv_cmd = [
            sys.executable,
            "-m",
            "image",
            "reference-values",
            "--image-description",
            str(desc),
            "--ovmf",
            str(fw),
            "--platform",
            "metal-qemu-snp",
            "--vcpus",
            "1..8",
            "--minimum-tcb",
            "0,0,0,0",
        ]

        def ssm_16() -> None:
            for product in ("EPYC-Milan", "EPYC-Genoa"):
                for n in range(1, 9):
                    run(
                        [
                            ssm,
                            "--mode",
                            "snp",
                            "--vcpus",
                            str(n),
                            "--vcpu-type",
                            product,
                            "--ovmf",
                            str(fw),
                            "--kernel",
                            str(kernel),
                            "--initrd",
                            str(initrd),
                            "--append",
                            f"{cmdline} {root_hash}",
                        ]
                    )

        direct_cmd = [sys.executable, "-m", "image.measure", *ours_cmd[4:]]  # without the word "measure"
        ssm_cli = median_time(lambda: run(ssm_cmd), args.repeat)
        rows = [
            ("1 digest, python -m image", median_time(lambda: run(ours_cmd), args.repeat), ssm_cli),
            ("1 digest, python -m image.measure", median_time(lambda: run(direct_cmd), args.repeat), ssm_cli),
            ("1 digest, in-process", median_time(ours_lib, args.repeat), median_time(ssm_lib, args.repeat)),
            (
                "16 digests (1..8 vCPUs x 2)",
                median_time(lambda: run(rv_cmd), max(1, args.repeat // 2)),
                median_time(ssm_16, max(1, args.repeat // 2)),
            ),
        ]
    print(f"inputs: 4 MiB AmdSev-style OVMF, {label}; median of {args.repeat} runs")
    print(f"{'case':<34} {'image.measure':>14} {'sev-snp-measure':>16} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:<34} {ours * 1000:>12.1f}ms {theirs * 1000:>14.1f}ms {ours / theirs:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
