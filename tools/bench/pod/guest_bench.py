"""Runs inside the pod VM (test share, ``cg.test=1``) for tools/bench/pod: CreateContainer → running
through the builtin agent (policy interceptor + backend in one process, ttrpc over a unix socket)
vs crun and runc directly on pre-unpacked bundles with the agent's own config.json — same VM, same
busybox files, same moment. Prints ``MARK pod-bench <json>`` on the console.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from guest.backend import AgentBackend, InProcessAgent
from guest.backend.processes import OutputStream
from guest.backend.runtime import OciRuntime, Stdio
from guest.interceptor import PolicyInterceptor
from guest.policy.engine import AgentPolicy
from guest.protocols import agent_pb2
from guest.ttrpc import Client, Server, parse_address
from tools.vm.pod import SANDBOX_ID, SHARED, container_request, pause_request, pod_policy

ROUNDS = 8
RUNC = Path("/mnt/share/oracle/bin/runc")
PROGRAM = ["sh", "-c", "echo ready; exec sleep 100000"]


def _pin() -> dict[str, str]:
    for word in Path("/proc/cmdline").read_text().split():
        if word.startswith("cg.bench.pin="):
            value: dict[str, str] = json.loads(base64.b64decode(word.split("=", 1)[1]))
            return value
    raise RuntimeError("no cg.bench.pin= on the command line")


async def _call(client: Client, method: str, msg: Any, reply: Any = empty_pb2.Empty) -> Any:
    payload = await client.call("grpc.AgentService", method, msg.SerializeToString(), timeout=300)
    return reply.FromString(payload)


async def _copy(client: Client, cid: str, name: str, data: bytes) -> str:
    path = f"{SHARED}/{cid}-0123456789abcdef-{name}"
    await _call(client, "CopyFile", agent_pb2.CopyFileRequest(path=path, file_size=len(data),
                                                               file_mode=0o100644, dir_mode=0o750, data=data))
    return path


async def _through_agent(client: Client, pin: dict[str, str], cid: str) -> float:
    hosts = await _copy(client, cid, "hosts", b"127.0.0.1 localhost\n")
    t0 = time.perf_counter()
    await _call(client, "CreateContainer", container_request(cid, PROGRAM, pin, hosts=hosts))
    await _call(client, "StartContainer", agent_pb2.StartContainerRequest(container_id=cid))
    read = agent_pb2.ReadStreamRequest(container_id=cid, exec_id=cid, len=64)
    first = await _call(client, "ReadStdout", read, agent_pb2.ReadStreamResponse)
    elapsed = time.perf_counter() - t0
    assert first.data == b"ready\n", first.data
    return elapsed


async def _direct(runtime: OciRuntime, template: dict[str, Any], files: Path, name: str) -> float:
    """crun/runc create + start on a bundle made beforehand; until the first stdout byte."""
    bundle = Path("/run/bench") / name
    shutil.copytree(files, bundle / "rootfs", symlinks=True)
    spec = json.loads(json.dumps(template))
    spec["root"]["path"] = str(bundle / "rootfs")
    spec["linux"]["cgroupsPath"] = f"/bench/{name}"
    (bundle / "config.json").write_text(json.dumps(spec))
    pipes = [os.pipe() for _ in range(3)]
    stdio = Stdio(pipes[0][0], pipes[1][1], pipes[2][1])
    t0 = time.perf_counter()
    await runtime.create(name, bundle, bundle / "pid", stdio)
    for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
        os.close(fd)
    await runtime.start(name)
    data = await OutputStream(pipes[1][0]).read(64)  # the agent's own read path
    elapsed = time.perf_counter() - t0
    assert data == b"ready\n", data
    return elapsed


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def bench() -> dict[str, Any]:
    pin = _pin()
    policy = AgentPolicy()
    policy.set_policy(pod_policy(pin))
    backend = AgentBackend(pinned_layers=lambda: [pin])
    await backend.start()
    server = Server(InProcessAgent(PolicyInterceptor(policy), backend).handlers())
    address = parse_address("unix:///run/bench-agent.sock")
    await server.start(address)
    client = await Client().connect(address)
    shm = agent_pb2.Storage(driver="ephemeral", source="shm", fstype="tmpfs", options=["size=67108864"],
                            mount_point="/run/kata-containers/sandbox/shm")
    await _call(client, "CreateSandbox", agent_pb2.CreateSandboxRequest(
        hostname="bench", storages=[shm], sandbox_pidns=False, sandbox_id=SANDBOX_ID))
    resolv = await _copy(client, SANDBOX_ID, "resolv.conf", b"nameserver 10.96.0.10\n")
    await _call(client, "CreateContainer", pause_request(resolv))
    await _call(client, "StartContainer", agent_pb2.StartContainerRequest(container_id=SANDBOX_ID))
    warm = await _through_agent(client, pin, "warm")  # mounts the shared layer once
    template = json.loads(Path("/run/kata-containers/warm/config.json").read_text())  # noqa: ASYNC240
    files = next((backend.layout.sandbox / "layers").iterdir())
    runtimes = {name: OciRuntime(backend.reaper, binary, Path(f"/run/{name}-bench"))
                for name, binary in (("crun", Path("/usr/bin/crun")), ("runc", RUNC)) if binary.is_file()}
    times: dict[str, list[float]] = {"agent": [], **{name: [] for name in runtimes}}
    for i in range(ROUNDS):  # interleaved, so a load spike on the shared host hits every path alike
        times["agent"].append(await _through_agent(client, pin, f"a{i}"))
        for name, runtime in runtimes.items():
            times[name].append(await _direct(runtime, template, files, f"{name}{i}"))
    results: dict[str, Any] = {"agent_first": warm, "rounds": ROUNDS,
                               **{name: _stats(values) for name, values in times.items()}}
    await client.close()
    await server.close()
    return results


def test_pod_bench() -> None:
    results = asyncio.run(bench())
    with open("/dev/console", "w") as console:
        console.write(f"MARK pod-bench {json.dumps(results)}\n")
