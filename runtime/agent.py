"""The guest agent as Kata's runtime calls it: one long-lived ttrpc connection, Kata's per-call
deadlines, and its few tolerated errors.

Deadlines: Health.Check 30 s; CreateContainer ``create_container_timeout`` (it covers the guest's
image pull); WaitProcess, ReadStdout, ReadStderr and GetOOMEvent none; everything else 60 s. A
DEADLINE_EXCEEDED becomes "<Request> timed out"; an ESRCH from SignalProcess is not an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from guest.protocols import agent_pb2, health_pb2
from guest.ttrpc import Client, Code, Status, TtrpcError

from .hvsock import open_agent_connection

__all__ = ["AGENT_SERVICE", "HEALTH_SERVICE", "AgentClient"]

log = logging.getLogger("runtime.agent")

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"
CHECK_TIMEOUT = 30.0
DEFAULT_TIMEOUT = 60.0
READ_CHUNK = 32 * 1024

R = TypeVar("R", bound=Message)


class AgentClient:
    def __init__(self, create_container_timeout: float = 60.0) -> None:
        self.client = Client()
        self.create_container_timeout = create_container_timeout

    async def connect(self, hvsock: Path, port: int, dial_timeout: float) -> None:
        sock = await open_agent_connection(hvsock, port, dial_timeout)
        await self.client.connect_socket(sock)

    async def close(self) -> None:
        await self.client.close()

    async def _call(
        self,
        service: str,
        method: str,
        req: Message,
        reply: type[R],
        timeout: float | None,  # noqa: ASYNC109 (goes on the wire as timeout_nano)
    ) -> R:
        try:
            payload = await self.client.call(service, method, req.SerializeToString(), timeout=timeout)
        except TtrpcError as e:
            if e.code == Code.DEADLINE_EXCEEDED:
                raise TtrpcError(Status(Code.DEADLINE_EXCEEDED, f"{type(req).__name__} timed out")) from None
            raise
        out = reply()
        out.ParseFromString(payload)
        return out

    async def check(self) -> health_pb2.HealthCheckResponse:
        return await self._call(
            HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, CHECK_TIMEOUT
        )

    async def call(self, method: str, req: Message, reply: type[R]) -> R:
        """An AgentService call with the deadline Kata's runtime gives it."""
        timeout: float | None = DEFAULT_TIMEOUT
        if method == "CreateContainer":
            timeout = self.create_container_timeout
        elif method in ("WaitProcess", "ReadStdout", "ReadStderr", "GetOOMEvent"):
            timeout = None
        return await self._call(AGENT_SERVICE, method, req, reply, timeout)

    async def signal(self, container_id: str, exec_id: str, signo: int) -> None:
        try:
            await self.call(
                "SignalProcess",
                agent_pb2.SignalProcessRequest(container_id=container_id, exec_id=exec_id, signal=signo),
                empty_pb2.Empty,
            )
        except TtrpcError as e:
            if "ESRCH: No such process" in e.status.message:
                return
            raise
