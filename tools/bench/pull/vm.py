"""``tools.bench.pull --vm``: the same comparison inside the TCG pod VM (see guest_bench.py)."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

from image.build.elf import library_closure
from image.build.erofs import make_erofs
from tools.vm.guest_tests import run_in_guest
from tools.vm.qemu import Disk, qemu_available

REPO = Path(__file__).resolve().parents[3]
GUEST_BENCH = "tools/bench/pull/guest_bench.py::test_pull_bench"
TOOLS = (Path("/usr/bin/skopeo"), Path("/usr/bin/docker-registry"))


def tools_disk(work: Path) -> Path:
    """skopeo and docker-registry with their libraries as an erofs disk (bench only, never the image)."""
    stage = work / "tools"
    (stage / "bin").mkdir(parents=True)
    (stage / "lib").mkdir()
    for b in TOOLS:
        shutil.copyfile(b, stage / "bin" / b.name)
        (stage / "bin" / b.name).chmod(0o755)
    for path, src in library_closure(list(TOOLS)).items():
        shutil.copyfile(src, stage / "lib" / Path(path).name)
        (stage / "lib" / Path(path).name).chmod(0o755)
    disk = work / "tools.img"
    make_erofs(stage, disk, epoch=0, compression="")
    return disk


def _image(work: Path) -> Path:
    from image.build import BuildOptions, build_image, default_cache_dir

    out = work / "image"
    build_image(BuildOptions(out=out, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
    return out


def run_vm(work: Path, size_mib: int, layers: int, rounds: int) -> dict[str, Any]:
    reason = qemu_available()
    if reason:
        raise SystemExit(reason)
    params = f"cg.bench.pull={size_mib},{layers},{rounds}"
    out = run_in_guest(_image(work), [GUEST_BENCH], extra_cmdline=params, disks=[Disk(tools_disk(work))])
    m = re.search(r"MARK pull-bench (\{.*\})", out.console)
    if m is None:
        result = out.results.get(GUEST_BENCH, {})
        detail = f"{out.error}\n{result.get('longrepr', '')}\n{out.console[-3000:]}"
        raise SystemExit(f"guest bench failed: {detail}")
    value: dict[str, Any] = json.loads(m.group(1))
    return value


def print_vm(result: dict[str, Any]) -> None:
    mib = result["bytes"] / 2**20
    peer = min(result["skopeo"])
    print(f"in the TCG pod VM: {result['layers']} uncompressed layers, {mib:.1f} MiB, docker-registry on the "
          f"guest's loopback, destinations on tmpfs, {len(result['oci'])} interleaved rounds")
    print(f"{'row':<26}{'best s':>9}{'median s':>10}{'MiB/s':>9}{'vs skopeo':>11}")
    for label, key in (("oci pull (in the agent)", "oci"), ("skopeo copy", "skopeo")):
        best = min(result[key])
        print(f"{label:<26}{best:>9.2f}{statistics.median(result[key]):>10.2f}{mib / best:>9.1f}"
              f"{peer / best:>10.2f}x")
