"""A recording fake kata-agent (a real ttrpc Server) and a proxy+client wired over unix sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from guest.api import RPCS
from guest.interceptor import PolicyInterceptor
from guest.policy.engine import AgentPolicy
from guest.ttrpc import Client, Proxy, Request, Server, parse_address


@dataclass
class FakeAgent:
    """Records every request it receives; answers with a fixed payload per method."""

    received: list[Request] = field(default_factory=list)
    replies: dict[str, bytes] = field(default_factory=dict)

    def handlers(self) -> dict[tuple[str, str], object]:
        def make(method: str) -> object:
            async def handle(request: Request) -> bytes:
                self.received.append(request)
                return self.replies.get(method, b"")

            return handle

        return {key: make(key[1]) for key in RPCS}


@dataclass
class Wiring:
    agent: FakeAgent
    policy: AgentPolicy
    client: Client
    interceptor: PolicyInterceptor


@contextlib.asynccontextmanager
async def wired(tmp: Path, policy: AgentPolicy) -> AsyncIterator[Wiring]:
    agent = FakeAgent()
    agent_addr = parse_address(f"unix://{tmp}/agent.sock")
    proxy_addr = parse_address(f"unix://{tmp}/proxy.sock")
    server = Server(agent.handlers())  # type: ignore[arg-type]
    await server.start(agent_addr)
    interceptor = PolicyInterceptor(policy)
    proxy = Proxy(agent_addr, interceptor)
    await proxy.start(proxy_addr)
    client = await Client().connect(proxy_addr)
    try:
        yield Wiring(agent, policy, client, interceptor)
    finally:
        await client.close()
        await proxy.close()
        await server.close()
