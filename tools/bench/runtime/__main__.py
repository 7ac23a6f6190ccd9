"""Runtime benchmark (issue 15): a container through containerd with our shim vs containerd's runc shim.

One containerd of our own (tools/vm/containerd.py), one imported busybox image, rounds interleaved:

- ``ctr run --rm IMAGE id sh -c 'echo hi'`` wall time with ``io.containerd.contrast-cc.v2``
  (host-EROFS, TCG pod VM: boot, CreateSandbox, pause, CreateContainer, run, teardown) and with
  ``io.containerd.runc.v2`` on the host, same image, same containerd;
- for a detached task of our shim: the shim daemon's RSS and CPU time (user+system) at the point the
  task runs, and QEMU's RSS.

- the CRI pod start: RunPodSandbox → CreateContainer → StartContainer (first container running), the
  same host-network pod with the runtime handler ``contrast-cc`` and with ``runc``.

Run: ``.venv/bin/python -m tools.bench.runtime [--rounds 3]`` (root). Prints one table.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grpc  # type: ignore[import-untyped]

from attestation import initdata as initdata_format
from tools.vm.containerd import (
    RUNTIME,
    Containerd,
    busybox_image_archive,
    host_erofs_config,
    pinned_policy,
    running_containerd,
    shim_processes,
)
from tools.vm.cri.client import CriClient
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


def _pod_start(client: CriClient, handler: str, name: str, annotations: dict[str, str], logs: Path) -> float:
    """Seconds from RunPodSandbox to the first container started; the pod is removed afterwards."""
    pb = client.pb
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=name, namespace="default"),
        log_directory=str(logs),
        annotations=annotations,
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE)
            )
        ),
    )
    t0 = time.monotonic()
    sid = client.call(
        "RunPodSandbox", pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
    ).pod_sandbox_id
    try:
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"),
            image=pb.ImageSpec(image=IMAGE),
            command=["sh", "-c", "sleep 600"],
            log_path=f"{name}.log",
        )
        cid = client.call(
            "CreateContainer",
            pb.CreateContainerRequest(pod_sandbox_id=sid, config=cfg, sandbox_config=config),
        ).container_id
        client.call("StartContainer", pb.StartContainerRequest(container_id=cid))
        return time.monotonic() - t0
    finally:
        client.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        client.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))


runc_error: list[str] = []


def _cri_rounds(image: Path, rounds: int) -> tuple[list[float], list[float]]:
    work = Path(tempfile.mkdtemp(prefix="cg-bench-cri-"))
    try:
        config = host_erofs_config(image, work)
        with running_containerd(cri_runtime_config=config) as ctd:
            ns = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
            archive = ctd.base / "busybox.tar"
            digest = busybox_image_archive(archive)
            ns.ctr("image", "import", str(archive))
            toml = initdata_format.encode(
                initdata_format.Initdata(
                    "0.1.0", "sha256", {"policy.rego": pinned_policy(ns, digest, work / "layers")}
                )
            )
            annotations = {initdata_format.ANNOTATION: initdata_format.encode_annotation(toml)}
            logs = work / "logs"
            logs.mkdir()
            client = CriClient(ctd.socket)
            client.wait_ready()
            ours: list[float] = []
            runc: list[float] = []
            for i in range(rounds):
                ours.append(_pod_start(client, "contrast-cc", f"cc{i}", annotations, logs))
                try:
                    runc.append(_pod_start(client, "runc", f"runc{i}", {}, logs))
                except grpc.RpcError as e:  # reported in the table instead of the number
                    runc_error[:] = [str(e.details())[-160:]]
            client.close()
            return ours, runc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.runtime")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from image.build import BuildOptions, build_image, default_cache_dir

    image_dir = Path(tempfile.mkdtemp(prefix="cg-bench-image-"))
    atexit.register(shutil.rmtree, image_dir, True)
    build_image(BuildOptions(out=image_dir, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
    with running_containerd() as ctd:
        image = image_dir
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
    pod_ours, pod_runc = _cri_rounds(image_dir, args.rounds)
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
    pm_ours = statistics.median(pod_ours)
    if pod_runc:
        pm_runc = statistics.median(pod_runc)
        runc_cell, ratio = f"{pm_runc:.2f}", f"{pm_ours / pm_runc:.0f}x"
    else:
        runc_cell, ratio = f"failed here: {runc_error[0] if runc_error else '?'}", ""
    print(
        f"| CRI pod start: RunPodSandbox → first container started, median (s) | {pm_ours:.2f} | "
        f"{runc_cell} | {ratio} |"
    )
    rounds_pod = ", ".join(f"{x:.2f}" for x in pod_ours)
    print(f"| all rounds (s) | {rounds_pod} | {', '.join(f'{x:.2f}' for x in pod_runc)} | |")
    print(f"| shim daemon RSS with a running task (MiB) | {shim_rss / 1024:.1f} | | |")
    print(f"| shim daemon CPU for create+start (s) | {shim_cpu:.2f} | | |")
    print(f"| its children (layer preparation, event publishing) CPU (s) | {child_cpu:.2f} | | |")
    print(f"| QEMU RSS (MiB) | {qemu_rss / 1024:.1f} | | |")
    print(f"| processes left after delete | {len(left)} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
