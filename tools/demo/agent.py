"""Step 3: a pod's policy agent (`python -m guest serve`) in front of a local stand-in for kata-agent.

The stand-in is a real ttrpc server (guest.ttrpc.Server) answering the AgentService methods the demo
calls; it records the exact bytes it received, so the demo can show that allowed requests arrive
re-encoded (an unknown field smuggled by the "host" is gone) and denied ones never arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from guest.protocols import agent_pb2
from guest.ttrpc import Client, Request, Server, parse_address
from guest.ttrpc.status import Code

from .errors import StepFailedError
from .report import Narrator

SERVICE = "grpc.AgentService"
METHODS = ("StartContainer", "ExecProcess", "RemoveContainer")
# Field 99 (varint 1) is not in StartContainerRequest: a parser-discrepancy probe the agent must strip.
UNKNOWN_FIELD = b"\x98\x06\x01"


@dataclass
class EchoAgent:
    """Answers every call with an empty message (google.protobuf.Empty) and keeps what it got."""

    received: list[tuple[str, bytes]] = field(default_factory=list)

    def handlers(self) -> dict[tuple[str, str], object]:
        return {(SERVICE, m): self._handler(m) for m in METHODS}

    def _handler(self, method: str) -> object:
        async def handle(request: Request) -> bytes:
            self.received.append((method, request.payload))
            return b""

        return handle


@dataclass(frozen=True)
class PodFiles:
    workdir: Path
    initdata_device: Path
    host_data: bytes
    default_policy: Path


async def _wait_for(path: Path, proc: asyncio.subprocess.Process, limit: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not os.path.exists(path):  # noqa: ASYNC240 - a stat every 50 ms while waiting
        if proc.returncode is not None:
            raise StepFailedError(f"guest agent exited early with status {proc.returncode}")
        if loop.time() > deadline:
            raise StepFailedError(f"guest agent did not listen on {path} within {limit:.0f} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def policy_agent(files: PodFiles, repo: Path) -> AsyncIterator[tuple[Client, EchoAgent, str]]:
    """The stand-in kata-agent, `python -m guest serve` in front of it, and a client of the latter.

    Yields the client, the stand-in and the policy agent's log after start-up.
    """
    agent = EchoAgent()
    upstream = files.workdir / "kata-agent.sock"
    listen = files.workdir / "policy-agent.sock"
    server = Server(agent.handlers())  # type: ignore[arg-type]
    await server.start(parse_address(f"unix://{upstream}"))
    log_path = files.workdir / "guest-agent.log"
    argv = [
        sys.executable, "-m", "guest", "serve", "--listen", f"unix://{listen}",
        "--upstream", f"unix://{upstream}", "--policy", str(files.default_policy),
        "--initdata", str(files.initdata_device), "--evidence", f"snp:{files.host_data.hex()}",
        "--measured-dir", str(files.workdir / "measured-cfg"),
    ]
    proc: asyncio.subprocess.Process | None = None
    try:
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=log, stderr=log,
                start_new_session=True,
            )
        await _wait_for(listen, proc, 30)
        client = await Client().connect(parse_address(f"unix://{listen}"))
        try:
            yield client, agent, log_path.read_text(errors="replace")
        finally:
            await client.close()
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await server.close()


async def run_pod(files: PodFiles, say: Narrator, repo: Path) -> None:
    async with policy_agent(files, repo) as (client, agent, logged):
        if "event=measured_config_installed" not in logged:
            raise StepFailedError("the guest agent did not install the measured policy; its log:\n"
                                  + logged[-1500:])
        policy_file = files.workdir / "measured-cfg" / "policy.rego"
        say.ok(f"policy agent up: initdata digest matches HOST_DATA {files.host_data.hex()[:16]}…, "
               f"measured policy installed ({policy_file.stat().st_size} bytes)")
        await _calls(client, agent, say)


async def run_swapped_pod(files: PodFiles, say: Narrator, repo: Path) -> None:
    """A host that hands the pod a different initdata than the one the CPU measured: deny-all."""
    async with policy_agent(files, repo) as (client, agent, logged):
        if "event=measured_config_failed" not in logged:
            raise StepFailedError("the guest agent should refuse initdata that does not match HOST_DATA; "
                                  "its log:\n" + logged[-1500:])
        start_web = agent_pb2.StartContainerRequest(container_id="web").SerializeToString()
        resp = await client.request(Request(SERVICE, "StartContainer", start_web))
        _expect_denied(resp.status.code, resp.status.message, "StartContainerRequest", agent, 0)
        if "does not match HOST_DATA" not in resp.status.message:
            raise StepFailedError(f"the denial should name the HOST_DATA mismatch, got {resp.status.message}")
        say.ok(f"swapped initdata (host lies): deny-all, StartContainer(container_id=web): DENIED "
               f"{resp.status.code.name} {resp.status.message}")


async def _calls(client: Client, agent: EchoAgent, say: Narrator) -> None:
    start_web = agent_pb2.StartContainerRequest(container_id="web").SerializeToString()
    resp = await client.request(Request(SERVICE, "StartContainer", start_web + UNKNOWN_FIELD))
    if resp.status.code != Code.OK:
        raise StepFailedError(f"StartContainer(web) should be allowed, got {resp.status.code.name}: "
                         f"{resp.status.message}")
    if not agent.received or agent.received[-1] != ("StartContainer", start_web):
        raise StepFailedError(f"kata-agent should have received the re-encoded request {start_web.hex()}, "
                         f"got {agent.received!r}")
    say.ok(f"StartContainer(container_id=web): ALLOWED, forwarded re-encoded "
           f"(sent {len(start_web) + len(UNKNOWN_FIELD)} bytes with an unknown field, "
           f"kata-agent got {len(start_web)} bytes: {start_web.hex()})")

    before = len(agent.received)
    start_db = agent_pb2.StartContainerRequest(container_id="db").SerializeToString()
    resp = await client.request(Request(SERVICE, "StartContainer", start_db))
    _expect_denied(resp.status.code, resp.status.message, "StartContainerRequest", agent, before)
    say.ok(f"StartContainer(container_id=db): DENIED {resp.status.code.name} {resp.status.message}")

    exec_req = agent_pb2.ExecProcessRequest(container_id="web", exec_id="shell").SerializeToString()
    resp = await client.request(Request(SERVICE, "ExecProcess", exec_req))
    _expect_denied(resp.status.code, resp.status.message, "ExecProcessRequest", agent, before)
    say.ok(f"ExecProcess(container_id=web): DENIED {resp.status.code.name} {resp.status.message}")


def _expect_denied(code: Code, message: str, endpoint: str, agent: EchoAgent, before: int) -> None:
    if code != Code.PERMISSION_DENIED or f"{endpoint} is blocked by policy" not in message:
        raise StepFailedError(f"{endpoint} should be PERMISSION_DENIED by the policy, "
                              f"got {code.name}: {message}")
    if len(agent.received) != before:
        raise StepFailedError(f"a denied {endpoint} reached kata-agent: {agent.received[before:]!r}")
