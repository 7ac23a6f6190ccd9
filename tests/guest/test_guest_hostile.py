"""Hostile runtime input: nothing undecodable, unknown or erroring reaches the agent; no crash."""

from __future__ import annotations

import time
from pathlib import Path

from agent_harness import wired
from hypothesis import given, settings
from hypothesis import strategies as st

from guest.interceptor import PolicyInterceptor
from guest.policy.engine import AgentPolicy
from guest.protocols import agent_pb2, health_pb2
from guest.ttrpc import Answer, Code, Forward, Request

AGENT = "grpc.AgentService"
POLICY = """package agent_policy

import future.keywords.if

default StartContainerRequest := true
default CreateContainerRequest := false
default ReadStreamRequest := false
default SetPolicyRequest := true
default ExecProcessRequest := false
ExecProcessRequest if { input.process.Args == ["ok"] }
Conflict := x if { x := input.v[_] }
default WaitProcessRequest := false
WaitProcessRequest := x if { x := [true, false][_] }
"""


def policy() -> AgentPolicy:
    p = AgentPolicy()
    p.set_policy(POLICY)
    return p


async def test_undecodable_and_invalid_utf8_answered_unknown(tmp_path: Path) -> None:
    async with wired(tmp_path, policy()) as w:
        truncated = b"\x0a\x05ab"  # field 1, length 5, only 2 bytes
        bad_utf8 = b"\x0a\x02\xff\xfe"  # container_id = invalid UTF-8
        deep_groups = b"\x0b" * 5000  # nested start-group tags
        for payload in (truncated, bad_utf8, deep_groups):
            r = await w.client.request(Request(AGENT, "StartContainer", payload))
            assert r.status.code == Code.UNKNOWN and r.status.message.startswith("ttrpc err: ")
        assert w.agent.received == []


async def test_unknown_service_and_method_not_forwarded(tmp_path: Path) -> None:
    async with wired(tmp_path, policy()) as w:
        r = await w.client.request(Request("grpc.Nope", "StartContainer", b""))
        assert r.status.code == Code.INVALID_ARGUMENT
        assert r.status.message == "grpc.Nope service does not exist"
        r = await w.client.request(Request(AGENT, "Teleport", b""))
        assert (r.status.code, r.status.message) == (Code.UNIMPLEMENTED, "Teleport method")
        assert w.agent.received == []


async def test_unknown_fields_stripped_before_forwarding(tmp_path: Path) -> None:
    async with wired(tmp_path, policy()) as w:
        judged = agent_pb2.StartContainerRequest(container_id="c").SerializeToString()
        smuggled = judged + b"\xa2\x06\x03abc"  # field 100, length-delimited
        r = await w.client.request(Request(AGENT, "StartContainer", smuggled))
        assert r.status.code == Code.OK
        assert w.agent.received[-1].payload == judged


async def test_erroring_policies_answer_internal_and_do_not_forward(tmp_path: Path) -> None:
    async with wired(tmp_path, policy()) as w:
        r = await w.client.request(Request(AGENT, "WaitProcess", b""))  # conflicting outputs
        assert r.status.code == Code.INTERNAL
        assert r.status.message.startswith('"WaitProcessRequest: internal error')
        r = await w.client.request(Request(AGENT, "PauseContainer", b""))  # no rule at all
        assert r.status.code == Code.INTERNAL
        assert w.agent.received == []


async def test_huge_repeated_field_is_judged_not_forwarded(tmp_path: Path) -> None:
    req = agent_pb2.CreateContainerRequest(container_id="c")
    req.OCI.Process.Env.extend(f"V{i}=x" for i in range(150_000))
    payload = req.SerializeToString()
    assert len(payload) < 4 << 20
    async with wired(tmp_path, policy()) as w:
        start = time.monotonic()
        r = await w.client.request(Request(AGENT, "CreateContainer", payload))
        assert r.status.code == Code.PERMISSION_DENIED
        assert time.monotonic() - start < 30
        assert w.agent.received == []


async def test_health_is_never_checked(tmp_path: Path) -> None:
    p = AgentPolicy()
    p.set_policy("package agent_policy\n\ndefault StartContainerRequest := false\n")
    async with wired(tmp_path, p) as w:
        payload = health_pb2.CheckRequest(service="x").SerializeToString()
        r = await w.client.request(Request("grpc.Health", "Check", payload))
        assert r.status.code == Code.OK and len(w.agent.received) == 1


async def test_read_stdout_is_read_then_redacted(tmp_path: Path) -> None:
    async with wired(tmp_path, policy()) as w:
        w.agent.replies["ReadStdout"] = agent_pb2.ReadStreamResponse(data=b"secret").SerializeToString()
        payload = agent_pb2.ReadStreamRequest(container_id="c", len=10).SerializeToString()
        r = await w.client.request(Request(AGENT, "ReadStdout", payload))
        assert r.status.code == Code.OK and len(w.agent.received) == 1  # the read happened
        assert agent_pb2.ReadStreamResponse.FromString(r.payload).data == b""
        w.policy.set_policy(POLICY.replace("ReadStreamRequest := false", "ReadStreamRequest := true"))
        r = await w.client.request(Request(AGENT, "ReadStderr", payload))
        assert r.status.code == Code.OK and len(w.agent.received) == 2
        w.agent.replies["ReadStderr"] = w.agent.replies["ReadStdout"]
        r = await w.client.request(Request(AGENT, "ReadStderr", payload))
        assert agent_pb2.ReadStreamResponse.FromString(r.payload).data == b"secret"


async def test_set_policy_handled_here(tmp_path: Path) -> None:
    async with wired(tmp_path, policy()) as w:
        new = "package agent_policy\n\ndefault StartContainerRequest := false\n"
        r = await w.client.request(Request(AGENT, "SetPolicy",
                                           agent_pb2.SetPolicyRequest(policy=new).SerializeToString()))
        assert r.status.code == Code.OK
        r = await w.client.request(Request(AGENT, "StartContainer", b""))
        assert r.status.code == Code.PERMISSION_DENIED
        # the new policy has no SetPolicyRequest rule: undefined -> INTERNAL, nothing replaced
        r = await w.client.request(Request(AGENT, "SetPolicy",
                                           agent_pb2.SetPolicyRequest(policy=POLICY).SerializeToString()))
        assert r.status.code == Code.INTERNAL
        w.policy.set_policy(POLICY)
        r = await w.client.request(Request(AGENT, "SetPolicy",
                                           agent_pb2.SetPolicyRequest(policy="not rego").SerializeToString()))
        assert r.status.code == Code.INVALID_ARGUMENT
        assert w.agent.received == []


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["CreateContainer", "ExecProcess", "CopyFile", "UpdateInterface", "SetPolicy"]),
       st.binary(max_size=300))
async def test_arbitrary_payloads_never_crash(method: str, payload: bytes) -> None:
    interceptor = PolicyInterceptor(policy())
    out = await interceptor(Request(AGENT, method, payload))
    assert isinstance(out, Forward | Answer)
    if isinstance(out, Forward):
        # what goes upstream decodes to the message that was judged, with no unknown fields
        msg = getattr(agent_pb2, f"{method}Request")
        forwarded = out.request.payload
        assert msg.FromString(forwarded).SerializeToString(deterministic=True) == forwarded


async def test_oversized_denial_text_answered_like_kata(tmp_path: Path) -> None:
    p = AgentPolicy()
    p.set_policy(
        "package agent_policy\nimport future.keywords.if\ndefault StartContainerRequest := false\n"
        "StartContainerRequest if {\n"
        '  x := concat("", [s | some i in numbers.range(1, 300000); s := "abcdefghijklmnop"])\n'
        "  print(x)\n  false\n}\n"
    )
    async with wired(tmp_path, p) as w:
        for _ in range(2):  # the connection survives
            r = await w.client.request(Request(AGENT, "StartContainer", b""), timeout=60)
            assert r.status.code == Code.INVALID_ARGUMENT
            assert "exceed maximum message size of 4194304" in r.status.message
        assert w.agent.received == []
