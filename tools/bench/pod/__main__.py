"""Pod benchmark (issue 14): containers through the builtin agent vs the OCI runtime directly.

One run, two boots of the same TCG pod VM image:

1. test-share boot (``cg.test=1``): tools/bench/pod/guest_bench.py times CreateContainer → first
   stdout byte through the agent (interceptor + backend in-process, ttrpc on a unix socket) and
   ``crun``/``runc`` create+start on pre-unpacked bundles carrying the agent's own config.json —
   same VM, same busybox files, one after the other;
2. boot rounds, interleaved: the same image with the echo stand-in (``cg.agent=echo``, the boot's
   peer: kernel, initramfs, init and one Python start, no agent) and with the policy agent (QEMU
   start → ``event=serving``, and → the first GetGuestDetails reply over hybrid vsock, which waits
   for the backend the agent loads after it listens);
3. default boot (the agent on vsock, initdata policy): CreateContainer → first stdout byte over
   hybrid vsock as the Kata runtime sends it, agent RSS idle and with N containers.

Run: ``.venv/bin/python -m tools.bench.pod [--containers 10]``. Prints one table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from guest.protocols import agent_pb2
from tools.vm.guest_tests import run_in_guest
from tools.vm.pod import (
    NIC_ARGS,
    SANDBOX_ID,
    SHARED,
    build_busybox_layer,
    container_request,
    initdata_disk,
    pause_request,
    pod_policy,
    running_pod,
)
from tools.vm.qemu import Disk, SerialPort, VirtualMachine, qemu_available

REPO = Path(__file__).resolve().parents[3]
GUEST_BENCH = "tools/bench/pod/guest_bench.py::test_pod_bench"
PROGRAM = ["sh", "-c", "echo ready; exec sleep 100000"]


def _image(work: Path) -> Path:
    from image.build import BuildOptions, build_image, default_cache_dir

    out = work / "image"
    build_image(BuildOptions(out=out, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
    return out


def _rss(metrics: str) -> float:
    m = re.search(r"^kata_agent_process_resident_memory_bytes (\d+)$", metrics, re.M)
    return int(m.group(1)) / 2**20 if m else float("nan")


def in_guest_comparison(image: Path, layer: Path, pin: dict[str, str]) -> dict[str, Any]:
    pin_arg = base64.b64encode(json.dumps(pin, separators=(",", ":")).encode()).decode()
    out = run_in_guest(image, [GUEST_BENCH], extra_cmdline=f"cg.bench.pin={pin_arg}", disks=[Disk(layer)])
    m = re.search(r"MARK pod-bench (\{.*\})", out.console)
    if m is None:
        result = out.results.get(GUEST_BENCH, {})
        detail = f"{out.error}\n{result.get('longrepr', '')}\n{out.console[-3000:]}"
        raise SystemExit(f"guest bench failed: {detail}")
    value: dict[str, Any] = json.loads(m.group(1))
    return value


def echo_boot(image: Path, work: Path, disks: list[Path]) -> float:
    """QEMU start → the echo stand-in listening, same machine shape as the pod boot."""
    vm = VirtualMachine(image, extra_cmdline="cg.agent=echo", memory_mib=1024, disks=[Disk(d) for d in disks],
                        ports=[SerialPort("cg.hvsock")], extra_args=NIC_ARGS, workdir=work)
    work.mkdir(exist_ok=True)
    try:
        vm.start()
        vm.wait_for(r"MARK agent-listening", 600)
        return time.monotonic() - vm.started_at
    finally:
        vm.close()


def boot_rounds(image: Path, work: Path, layer: Path, pin: dict[str, str],
                rounds: int) -> dict[str, list[float]]:
    policy = pod_policy(pin)
    initdata, hostdata = initdata_disk(work, policy)
    out: dict[str, list[float]] = {"echo": [], "serving": [], "first_reply": []}
    for i in range(rounds):
        out["echo"].append(echo_boot(image, work / f"echo{i}", [initdata, layer]))
        boot_dir = work / f"boot{i}"
        boot_dir.mkdir()
        with running_pod(image, boot_dir, policy, layer, hostdata, initdata) as (vm, agent):
            agent.call("GetGuestDetails", agent_pb2.GuestDetailsRequest(), agent_pb2.GuestDetailsResponse)
            out["first_reply"].append(time.monotonic() - vm.started_at)
            out["serving"].append(agent.ready_seconds)
    return out


def over_vsock(image: Path, work: Path, layer: Path, pin: dict[str, str], count: int) -> dict[str, Any]:
    policy = pod_policy(pin)
    initdata, hostdata = initdata_disk(work, policy)
    with running_pod(image, work, policy, layer, hostdata, initdata) as (_vm, agent):
        idle = _rss(agent.call("GetMetrics", agent_pb2.GetMetricsRequest(), agent_pb2.Metrics).metrics)
        shm = agent_pb2.Storage(driver="ephemeral", source="shm", fstype="tmpfs",
                                options=["size=67108864"], mount_point="/run/kata-containers/sandbox/shm")
        agent.call("CreateSandbox", agent_pb2.CreateSandboxRequest(hostname="bench", storages=[shm],
                                                                   sandbox_id=SANDBOX_ID), empty_pb2.Empty)
        resolv = f"{SHARED}/{SANDBOX_ID}-0123456789abcdef-resolv.conf"
        agent.call("CopyFile", agent_pb2.CopyFileRequest(path=resolv, file_size=0, file_mode=0o100644,
                                                          dir_mode=0o750), empty_pb2.Empty)
        agent.call("CreateContainer", pause_request(resolv), empty_pb2.Empty)
        agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=SANDBOX_ID),
                   empty_pb2.Empty)
        times = []
        for i in range(count):
            cid = f"v{i}"
            hosts = f"{SHARED}/{cid}-0123456789abcdef-hosts"
            agent.call("CopyFile", agent_pb2.CopyFileRequest(path=hosts, file_size=0, file_mode=0o100644,
                                                              dir_mode=0o750), empty_pb2.Empty)
            t0 = time.perf_counter()
            agent.call("CreateContainer", container_request(cid, PROGRAM, pin, hosts=hosts), empty_pb2.Empty)
            agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=cid), empty_pb2.Empty)
            read = agent_pb2.ReadStreamRequest(container_id=cid, exec_id=cid, len=64)
            first = agent.call("ReadStdout", read, agent_pb2.ReadStreamResponse)
            times.append(time.perf_counter() - t0)
            assert first.data == b"ready\n", first.data
        metrics = agent.call("GetMetrics", agent_pb2.GetMetricsRequest(), agent_pb2.Metrics).metrics
        return {"ready": agent.ready_seconds, "idle_rss": idle, "rss": _rss(metrics), "times": times,
                "containers": count}


def _fmt(stats: dict[str, float] | None) -> str:
    if not stats:
        return "n/a"
    return f"{stats['median'] * 1000:.0f} ms (min {stats['min'] * 1000:.0f}, max {stats['max'] * 1000:.0f})"


def _fmt_s(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.pod", description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--boots", type=int, default=3, help="interleaved echo/agent boot rounds")
    args = parser.parse_args(argv)
    reason = qemu_available()
    if reason:
        raise SystemExit(f"cannot boot VMs here: {reason}")
    with tempfile.TemporaryDirectory(prefix="cg-bench-pod-") as tmp:
        work = Path(tmp)
        image = _image(work)
        layer, pin = build_busybox_layer(work)
        guest = in_guest_comparison(image, layer, pin)
        boots = boot_rounds(image, work, layer, pin, args.boots)
        vsock = over_vsock(image, work, layer, pin, args.containers)
    times = vsock["times"]
    vs = {"median": statistics.median(times), "min": min(times), "max": max(times)}
    crun = guest.get("crun") or {}
    ratio = guest["agent"]["median"] / crun["median"] if crun else float("nan")
    ratio_min = guest["agent"]["min"] / crun["min"] if crun else float("nan")
    n = guest.get("rounds", "?")
    rows = [
        (f"CreateContainer → running, agent in-guest (unix ttrpc), n={n}", _fmt(guest["agent"])),
        (f"same, crun create+start directly, same bundle, n={n}", _fmt(guest.get("crun"))),
        (f"same, runc create+start directly, same bundle, n={n}", _fmt(guest.get("runc"))),
        ("agent / crun, median (min) (target ≤ 1.3×)", f"{ratio:.2f}× ({ratio_min:.2f}×)"),
        ("first container (mounts the shared verity layer)", f"{guest['agent_first'] * 1000:.0f} ms"),
        (f"CreateContainer → running over hybrid vsock, n={len(times)}", _fmt(vs)),
        (f"boot to agent ready (QEMU start → event=serving, TCG), n={len(boots['serving'])}",
         _fmt_s(boots["serving"])),
        ("same, peer: echo stand-in listening (kernel+init+python, no agent)", _fmt_s(boots["echo"])),
        ("same, → first GetGuestDetails reply over hybrid vsock (backend loaded)",
         _fmt_s(boots["first_reply"])),
        ("boot to agent ready, container run below (event=serving)", f"{vsock['ready']:.2f} s"),
        ("agent RSS idle (GetMetrics)", f"{vsock['idle_rss']:.1f} MiB"),
        (f"agent RSS with {vsock['containers']} containers + pause", f"{vsock['rss']:.1f} MiB"),
        ("host load average (1 min) at end", f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
