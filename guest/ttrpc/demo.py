"""Demo: a local echo agent (our ttrpc server), our proxy in front of it, and a few calls through the proxy.

    python -m guest.ttrpc.demo

The interceptor here is a toy policy: it forwards most calls, answers ExecProcess itself with
PERMISSION_DENIED (the agent never sees it), and redacts the agent's ReadStdout reply on the way back.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from .address import parse_address
from .client import Client
from .errors import TtrpcError
from .messages import Request, Response
from .proxy import Answer, Forward
from .proxy import Proxy as TtrpcProxy
from .server import Handler, Server
from .status import Code, Status

SERVICE = "grpc.AgentService"


class EchoAgent:
    """Stand-in agent: Echo returns the payload, ReadStdout returns some container output."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def echo(self, request: Request) -> bytes:
        self.seen.append(request.method)
        return request.payload

    async def read_stdout(self, request: Request) -> bytes:
        self.seen.append(request.method)
        await asyncio.sleep(0.01)  # a real agent blocks until output arrives
        return b"password=hunter2\n"

    async def exec_process(self, request: Request) -> bytes:
        self.seen.append(request.method)
        return b""

    def handlers(self) -> dict[tuple[str, str], Handler]:
        return {(SERVICE, "Echo"): self.echo, (SERVICE, "ReadStdout"): self.read_stdout,
                (SERVICE, "ExecProcess"): self.exec_process}


async def _redact(response: Response) -> Response:
    return Response(response.status, b"<redacted by policy>")


async def toy_policy(request: Request) -> Forward | Answer:
    if request.method == "ExecProcess":
        return Answer(Response(Status(Code.PERMISSION_DENIED, "ExecProcessRequest is blocked by policy")))
    if request.method == "ReadStdout":
        return Forward(request, on_response=_redact)
    return Forward(request)


async def run(out: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="ttrpc-demo-") as tmp:
        agent = EchoAgent()
        server = Server(agent.handlers())
        agent_addr = await server.start(parse_address(f"unix://{Path(tmp) / 'agent.sock'}"))
        proxy = TtrpcProxy(agent_addr, toy_policy)
        proxy_addr = await proxy.start(parse_address(f"unix://{Path(tmp) / 'proxy.sock'}"))
        out.append(f"agent listening on {agent_addr}, proxy on {proxy_addr}")
        client = await Client().connect(proxy_addr)
        calls = [("Echo", b"hello agent"), ("ReadStdout", b""), ("ExecProcess", b"sh -c id"),
                 ("Missing", b"")]
        results = await asyncio.gather(
            *(client.call(SERVICE, m, p, timeout=5) for m, p in calls), return_exceptions=True
        )
        for (method, _), result in zip(calls, results, strict=True):
            if isinstance(result, TtrpcError):
                out.append(f"{SERVICE}/{method}: {result.status.code.name} {result.status.message!r}")
            elif isinstance(result, BaseException):
                raise result
            else:
                out.append(f"{SERVICE}/{method}: OK {result!r}")
        out.append(f"the agent saw: {', '.join(agent.seen)}")
        await client.close()
        await proxy.close()
        await server.close()
    ok = "ExecProcess" not in agent.seen and len(results) == len(calls)
    return 0 if ok else 1


def main() -> int:
    lines: list[str] = []
    rc = asyncio.run(run(lines))
    print("\n".join(lines))
    return rc


if __name__ == "__main__":
    sys.exit(main())
