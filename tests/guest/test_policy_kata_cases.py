"""kata's policy test cases through the full path: JSON -> protobuf -> ttrpc frame -> proxy -> decision.

Cases of one directory share one engine and run in file order (state carries over, as in kata's
harness). Allowed requests must reach the fake agent re-encoded from the judged message; denied ones
must not reach it and must carry kata-agent's PERMISSION_DENIED text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_harness import wired
from kata_testdata import POLICIES, case_dirs, load_cases

from guest.api import AGENT_SERVICE, RPCS
from guest.policy.engine import AgentPolicy
from guest.policy.input import copy_file_request_from_input, from_policy_json
from guest.protocols import agent_pb2
from guest.ttrpc import Code, Request

METHOD_OF: dict[str, str] = {}
for (_service, method), rpc in RPCS.items():
    METHOD_OF.setdefault(rpc.endpoint, method)


def encode_case(case: dict[str, Any]) -> bytes:
    kind = case["kind"]
    if kind == "CopyFileRequest":
        return copy_file_request_from_input(case["request"]).SerializeToString()
    return from_policy_json(getattr(agent_pb2, kind), case["request"]).SerializeToString()


@pytest.mark.parametrize("directory", case_dirs())
async def test_kata_cases_through_proxy(directory: str, tmp_path: Path) -> None:
    policy = AgentPolicy()
    policy.initialize(POLICIES / directory / "policy.rego")
    async with wired(tmp_path, policy) as w:
        for index, case in enumerate(load_cases(directory)):
            kind = case["kind"]
            payload = encode_case(case)
            before = len(w.agent.received)
            response = await w.client.request(Request(AGENT_SERVICE, METHOD_OF[kind], payload))
            where = f"{directory}#{index} {case['description']}"
            if case["allowed"]:
                assert response.status.code == Code.OK, f"{where}: {response.status.message[:300]}"
                assert len(w.agent.received) == before + 1, where
                forwarded = w.agent.received[-1]
                assert forwarded.method == METHOD_OF[kind]
                expected = getattr(agent_pb2, kind).FromString(payload).SerializeToString(deterministic=True)
                assert forwarded.payload == expected
            else:
                assert response.status.code == Code.PERMISSION_DENIED, f"{where}: {response.status}"
                assert response.status.message.startswith(f'"{kind} is blocked by policy: '), where
                assert response.status.message.endswith('"')
                assert len(w.agent.received) == before, where
