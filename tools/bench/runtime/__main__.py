"""Runtime benchmark (issue 15): a container through containerd with our shim vs containerd's runc shim.

One containerd of our own (tools/vm/containerd.py), one imported busybox image, rounds interleaved:

- ``ctr run --rm IMAGE id sh -c 'echo hi'`` wall time with ``io.containerd.contrast-cc.v2``
  (host-EROFS, TCG pod VM: boot, CreateSandbox, pause, CreateContainer, run, teardown) and with
  ``io.containerd.runc.v2`` on the host, same image, same containerd;
- for a detached task of our shim: the shim daemon's RSS and CPU time (user+system) at the point the
  task runs, and QEMU's RSS.

Run: ``.venv/bin/python -m tools.bench.runtime [--rounds 3]`` (root). Prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from attestation import initdata as initdata_format
from tools.vm.containerd import (
    RUNTIME,
    busybox_image_archive,
    host_erofs_config,
    pinned_policy,
    running_containerd,
    shim_processes,
)
from tools.vm.guest_tests import REPO

IMAGE = "docker.io/library/cc-shim-test:1"


def _proc_stat(pid: int) -> tuple[int, float, float]:
    """(RSS in KiB, own user+system CPU seconds, that of its waited-for children) of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.runtime")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from image.build import BuildOptions, build_image, default_cache_dir

    with running_containerd() as ctd:
        image = ctd.base / "image"
        build_image(BuildOptions(out=image, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
        archive = ctd.base / "busybox.tar"
        digest = busybox_image_archive(archive)
        ctd.ctr("image", "import", str(archive))
        work = ctd.base / "bench"
        work.mkdir()
        config = host_erofs_config(image, work)
        toml = initdata_format.encode(
            initdata_format.Initdata(
                "0.1.0", "sha256", {"policy.rego": pinned_policy(ctd, digest, work / "layers")}
            )
        )
        annotation = f"{initdata_format.ANNOTATION}={initdata_format.encode_annotation(toml)}"
        ours: list[float] = []
        runc: list[float] = []
        for i in range(args.rounds):
            t0 = time.monotonic()
            r = ctd.ctr(
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                "--runtime-config-path",
                str(config),
                "--annotation",
                annotation,
                IMAGE,
                f"cc{i}",
                "sh",
                "-c",
                "echo hi",
                timeout=400,
            )
            ours.append(time.monotonic() - t0)
            assert r.stdout == "hi\n", r.stderr
            t0 = time.monotonic()
            r = ctd.ctr(
                "run",
                "--rm",
                "--runtime",
                "io.containerd.runc.v2",
                IMAGE,
                f"runc{i}",
                "sh",
                "-c",
                "echo hi",
                timeout=120,
            )
            runc.append(time.monotonic() - t0)
            assert r.stdout == "hi\n", r.stderr
        started = ctd.ctr(
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--runtime-config-path",
            str(config),
            "--annotation",
            annotation,
            IMAGE,
            "idle",
            "sh",
            "-c",
            "sleep 600",
            timeout=400,
        )
        assert started.returncode == 0, started.stderr
        rundir = Path(ctd.env["CONTRAST_CC_RUN_DIR"])
        (pidfile,) = rundir.glob("*/shim.pid")
        shim_rss, shim_cpu, child_cpu = _proc_stat(int(pidfile.read_text()))
        (qemu_pidfile,) = rundir.glob("*/vm/qemu.pid")
        qemu_rss, _, _ = _proc_stat(int(qemu_pidfile.read_text()))
        ctd.ctr("task", "kill", "-s", "SIGKILL", "idle")
        time.sleep(2)
        ctd.ctr("task", "delete", "idle")
        ctd.ctr("container", "delete", "idle")
        deadline = time.monotonic() + 30
        while (left := shim_processes(rundir)) and time.monotonic() < deadline:
            time.sleep(0.2)
    med_ours, med_runc = statistics.median(ours), statistics.median(runc)
    print("| measure | contrast-cc shim (TCG pod VM) | runc shim (host) | ratio |")
    print("|---|---|---|---|")
    print(
        f"| ctr run --rm … echo hi, median of {args.rounds} (s) | {med_ours:.2f} | {med_runc:.2f} | "
        f"{med_ours / med_runc:.0f}x |"
    )
    rounds_ours = ", ".join(f"{x:.2f}" for x in ours)
    rounds_runc = ", ".join(f"{x:.2f}" for x in runc)
    print(f"| all rounds (s) | {rounds_ours} | {rounds_runc} | |")
    print(f"| shim daemon RSS with a running task (MiB) | {shim_rss / 1024:.1f} | | |")
    print(f"| shim daemon CPU for create+start (s) | {shim_cpu:.2f} | | |")
    print(f"| its children (layer preparation, event publishing) CPU (s) | {child_cpu:.2f} | | |")
    print(f"| QEMU RSS (MiB) | {qemu_rss / 1024:.1f} | | |")
    print(f"| processes left after delete | {len(left)} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
