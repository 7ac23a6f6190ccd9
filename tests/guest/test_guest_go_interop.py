"""kata's cases sent by a real Go ttrpc client (gogo protobuf encoding, as the Kata Go runtime uses).

The Go client builds each request from protobuf JSON with Go's own protobuf library and sends it
through our proxy; decisions must match kata's expectations, the Go encoding must decode to the same
policy input as ours, and allowed requests must reach the agent re-encoded.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from agent_harness import FakeAgent
from goagent_build import GoUnavailableError, build
from google.protobuf import json_format
from kata_testdata import POLICIES, case_dirs, load_cases

from guest.api import RPCS
from guest.interceptor import PolicyInterceptor
from guest.policy.engine import AgentPolicy
from guest.policy.input import copy_file_request_from_input, from_policy_json, to_policy_json
from guest.protocols import agent_pb2
from guest.ttrpc import Code, Proxy, Server, parse_address

pytestmark = pytest.mark.interop

METHOD_OF: dict[str, str] = {}
for (_service, method), rpc in RPCS.items():
    METHOD_OF.setdefault(rpc.endpoint, method)


@pytest.fixture(scope="module")
def go_client() -> Path:
    try:
        return build()
    except GoUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("directory", case_dirs())
async def test_go_client_cases(directory: str, go_client: Path, tmp_path: Path) -> None:
    lines, encodings = [], []
    for case in load_cases(directory):
        kind = case["kind"]
        msg = (copy_file_request_from_input(case["request"]) if kind == "CopyFileRequest"
               else from_policy_json(getattr(agent_pb2, kind), case["request"]))
        encodings.append(msg)
        lines.append(json.dumps({
            "method": METHOD_OF[kind], "type": f"grpc.{kind}",
            "json": json_format.MessageToJson(msg, preserving_proto_field_name=True),
        }))
    agent = FakeAgent()
    server = Server(agent.handlers())  # type: ignore[arg-type]
    await server.start(parse_address(f"unix://{tmp_path}/agent.sock"))
    policy = AgentPolicy()
    policy.initialize(POLICIES / directory / "policy.rego")
    proxy = Proxy(parse_address(f"unix://{tmp_path}/agent.sock"), PolicyInterceptor(policy))
    await proxy.start(parse_address(f"unix://{tmp_path}/proxy.sock"))
    try:
        proc = await asyncio.create_subprocess_exec(
            str(go_client), f"{tmp_path}/proxy.sock", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(("\n".join(lines) + "\n").encode()), 120)
    finally:
        await proxy.close()
        await server.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    results = [json.loads(x) for x in out.decode().splitlines()]
    assert len(results) == len(lines)
    forwarded = iter(agent.received)
    for case, ours, result in zip(load_cases(directory), encodings, results, strict=True):
        kind = case["kind"]
        go_msg = type(ours).FromString(bytes.fromhex(result["sent"]))
        assert to_policy_json(go_msg) == to_policy_json(ours), f"{kind}: Go encoding decodes differently"
        if case["allowed"]:
            assert result["code"] == Code.OK, result["message"][:300]
            assert next(forwarded).payload == go_msg.SerializeToString(deterministic=True)
        else:
            assert result["code"] == Code.PERMISSION_DENIED
            assert result["message"].startswith(f'"{kind} is blocked by policy: ')
    assert next(forwarded, None) is None
