"""Disk hotplug benchmark: pod VM boot with and without the PCIe root ports, and hotplug latency.

Boots the TCG pod VM through the runtime's own launcher (runtime.podvm), alternating the
``hotplug_slots = 0`` command line (microvm without PCIe, what the image booted with before) and
the default (microvm ``pcie=on`` + root ports + ``pcie_ports=native``), and times QEMU start →
the agent answering Health.Check. ``--baseline-image DIR`` boots the no-PCIe rounds from
another image (e.g. one built without ``virtio_pci``), so the module's load is counted too. One
more PCIe boot with ``loglevel=6`` (the kernel's virtio_blk line is a notice, hidden by ``quiet``)
hotplugs a raw disk
file through QMP (blockdev-add + device_add) and times it until the guest kernel reports the disk.

Run: ``.venv/bin/python -m tools.bench.hotplug [--rounds 3] [--image DIR] [--baseline-image DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from attestation import initdata as initdata_format
from runtime.agent import AgentClient
from runtime.config import Config
from runtime.podvm import AGENT_PORT, HOTPLUG_SLOTS, PodVM, VmLaunch, load_image, write_initdata_image
from tools.vm.pod import pod_policy


async def boot_once(image_dir: Path, work: Path, slots: int, hotplug: bool) -> dict[str, float]:
    config = Config(path=work / "rt.toml", image_dir=image_dir, accel="tcg")
    raw = initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": pod_policy({})}))
    digest = write_initdata_image(raw, work / "initdata.img")
    launch = VmLaunch(config=config, image=load_image(config), initdata_digest=digest,
                      initdata_image=work / "initdata.img", workdir=work, accel="tcg",
                      extra_cmdline="loglevel=6" if hotplug else "", hotplug_slots=slots)
    vm = PodVM(launch)
    agent = AgentClient(60)
    t0 = time.monotonic()
    out: dict[str, float] = {}
    try:
        await vm.start()
        await agent.connect(vm.agent_socket, AGENT_PORT, 180)
        await agent.check()
        out["boot"] = time.monotonic() - t0
        if hotplug:
            disk = work / "disk.raw"
            disk.write_bytes(b"")
            os.truncate(disk, 64 << 20)
            t1 = time.monotonic()
            hp = await vm.attach_disk(disk, readonly=False, block_device=False)
            out["qmp"] = time.monotonic() - t1
            # The guest's console (quiet) logs nothing; the kernel's virtio_blk line is printed at
            # KERN_NOTICE, above "quiet"'s threshold: wait for it.
            deadline = time.monotonic() + 60
            while b"[vdc]" not in (work / "console.log").read_bytes():
                if time.monotonic() > deadline:
                    raise TimeoutError("the guest never reported the hotplugged disk")
                await asyncio.sleep(0.02)
            out["hotplug"] = time.monotonic() - t1
            assert hp.pci_path
    finally:
        await agent.close()
        await vm.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--baseline-image", type=Path, default=None)
    args = ap.parse_args()
    image_dir = args.image
    if image_dir is None:
        from image.build import BuildOptions, build_image, default_cache_dir

        image_dir = Path(tempfile.mkdtemp(prefix="cg-image-"))
        build_image(BuildOptions(out=image_dir, repo=Path(__file__).resolve().parents[3],
                                 cache_dir=default_cache_dir(), quiet=True))
    plain, pcie = "no PCIe (hotplug_slots = 0)", f"PCIe, {HOTPLUG_SLOTS} root ports"
    runs: dict[str, list[dict[str, float]]] = {plain: [], pcie: []}
    base = args.baseline_image or image_dir
    for _ in range(args.rounds):
        for name, slots, img in ((plain, 0, base), (pcie, HOTPLUG_SLOTS, image_dir)):
            with tempfile.TemporaryDirectory(prefix="cg-hp-") as d:
                runs[name].append(asyncio.run(boot_once(img, Path(d), slots, False)))
    print("| boot (QEMU start → Health.Check) | median s | all rounds s |")
    print("|---|---|---|")
    for name, rs in runs.items():
        b = [r["boot"] for r in rs]
        print(f"| {name} | {statistics.median(b):.2f} | {', '.join(f'{x:.2f}' for x in b)} |", flush=True)
    with tempfile.TemporaryDirectory(prefix="cg-hp-") as d:
        hp = [asyncio.run(boot_once(image_dir, Path(d), HOTPLUG_SLOTS, True))]
    for key, what in (("qmp", "hotplug: QMP blockdev-add + device_add"),
                      ("hotplug", "hotplug: QMP start → guest kernel has the disk")):
        vals = [r[key] for r in hp]
        print(f"| {what} | {statistics.median(vals):.3f} | {', '.join(f'{x:.3f}' for x in vals)} |")

if __name__ == "__main__":
    main()
