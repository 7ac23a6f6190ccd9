"""The ttrpc interceptor: decode, judge with the policy, forward what was judged, answer the rest.

For every request from the Kata runtime:

1. unknown service or method -> answered here (INVALID_ARGUMENT / UNIMPLEMENTED, kata-agent's texts);
   we cannot judge what we cannot parse, so it never reaches the agent;
2. the payload is decoded as the method's request message; bytes that do not decode (invalid UTF-8 in
   a string, truncated varints, nesting deeper than the parser allows) are answered with UNKNOWN
   "ttrpc err: ..." as kata-agent does, and the policy is never consulted;
3. unknown fields are discarded and the message is re-encoded: that encoding, not the runtime's bytes,
   is what goes upstream, so a parser difference cannot smuggle a field past the policy;
4. Health is forwarded unchecked; SetPolicy is handled here (the agent behind us never sees it);
   ReadStdout/ReadStderr are read first and their data cleared if the policy refuses (kata's
   read-then-redact); every other RPC is checked before it is forwarded.

Decisions are logged as one structured line; denials carry an explanation (guest.explain) that never
includes environment values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message

from guest.api import SERVICES, Rpc, lookup
from guest.decisions import status_for
from guest.policy.engine import AgentPolicy
from guest.policy.errors import PolicyDeniedError, PolicyError
from guest.policy.input import copy_file_input, to_policy_json
from guest.protocols import agent_pb2
from guest.ttrpc import (
    Answer,
    Code,
    Forward,
    Request,
    Response,
    Status,
    unknown_method_status,
    unknown_service_status,
)

__all__ = ["Explainer", "PolicyInterceptor", "policy_input"]

log = logging.getLogger("guest.agent")

Explainer = Callable[[str, Any, tuple[str, ...]], list[str]]
_READ_STREAM = frozenset({"ReadStdout", "ReadStderr"})


def policy_input(msg: Message) -> Any:
    """What Rego sees for ``msg`` (CopyFile's projection, otherwise the serde JSON)."""
    if isinstance(msg, agent_pb2.CopyFileRequest):
        return copy_file_input(msg)
    return to_policy_json(msg)


class PolicyInterceptor:
    """``Interceptor`` for guest.ttrpc.Proxy enforcing ``policy`` on every AgentService call."""

    def __init__(self, policy: AgentPolicy, *, explainer: Explainer | None = None) -> None:
        self.policy = policy
        self.explainer = explainer

    async def __call__(self, request: Request) -> Forward | Answer:
        rpc = lookup(request.service, request.method)
        if rpc is None:
            status = (unknown_method_status(request.method) if request.service in SERVICES
                      else unknown_service_status(request.service))
            log.warning("event=unknown_rpc service=%s method=%s", json.dumps(request.service),
                        json.dumps(request.method))
            return Answer(Response(status))
        try:
            msg = rpc.request_type.FromString(request.payload)
        except (DecodeError, RecursionError, ValueError) as exc:
            log.warning("event=undecodable_request method=%s error=%s", rpc.method, json.dumps(str(exc)))
            return Answer(Response(Status(Code.UNKNOWN, f"ttrpc err: {exc}")))
        msg.DiscardUnknownFields()
        judged = Request(request.service, request.method, msg.SerializeToString(deterministic=True),
                         request.timeout_nano, request.metadata)
        if not rpc.checked:
            return Forward(judged)
        if rpc.method in _READ_STREAM:
            return Forward(judged, on_response=self._redactor(rpc, msg))
        if rpc.method == "SetPolicy":
            assert isinstance(msg, agent_pb2.SetPolicyRequest)
            return Answer(self.set_policy(msg))
        error = self.judge(rpc, msg)
        if error is not None:
            return Answer(Response(status_for(error)))
        return Forward(judged)

    def judge(self, rpc: Rpc, msg: Message) -> PolicyError | None:
        """Evaluate ``msg``; None if allowed, else the error to answer with (already logged)."""
        endpoint = rpc.endpoint
        try:
            value = policy_input(msg)
            decision = self.policy.check(endpoint, value)
        except PolicyDeniedError as exc:
            self._log_denial(endpoint, value, exc.print_lines)
            return exc
        except PolicyError as exc:
            log.error("event=policy_error endpoint=%s error=%s", endpoint, json.dumps(str(exc)[:2000]))
            return exc
        log.info("event=policy_allowed endpoint=%s forced=%s", endpoint, str(decision.forced).lower())
        return None

    def _log_denial(self, endpoint: str, value: Any, print_lines: tuple[str, ...]) -> None:
        reasons: list[str] = []
        if self.explainer is not None:
            try:
                reasons = self.explainer(endpoint, value, print_lines)
            except Exception as exc:  # an explanation must never change the decision
                reasons = [f"no explanation: {exc!r}"]
        log.warning("event=policy_denied endpoint=%s reasons=%s", endpoint, json.dumps(reasons))

    def _redactor(self, rpc: Rpc, msg: Message) -> Callable[[Response], Any]:
        async def redact(response: Response) -> Response:
            if not response.status.ok:
                return response
            if self.judge(rpc, msg) is None:
                return response
            # kata-agent: the bytes were read, then the policy refused -> OK with empty data.
            return Response(response.status, agent_pb2.ReadStreamResponse().SerializeToString())

        return redact

    def set_policy(self, msg: agent_pb2.SetPolicyRequest) -> Response:
        """kata's do_set_policy: check SetPolicyRequest on the current policy, then replace it."""
        try:
            self.policy.check("SetPolicyRequest", {"policy": msg.policy})
        except PolicyError as exc:
            if isinstance(exc, PolicyDeniedError):
                log.warning("event=policy_denied endpoint=SetPolicyRequest reasons=[]")
            return Response(status_for(exc))
        try:
            self.policy.set_policy(msg.policy)
        except PolicyError as exc:
            log.error("event=set_policy_failed error=%s", json.dumps(str(exc)[:2000]))
            return Response(status_for(exc))
        log.warning("event=policy_replaced source=SetPolicy measured=false")
        return Response(Status(Code.OK), b"")
