"""The Python sides of the benchmark, each run in its own process (as the Go peers are):

python -m tools.bench.ttrpc serve unix:///path [--uvloop]
python -m tools.bench.ttrpc proxy unix:///listen unix:///upstream [--uvloop]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from guest.ttrpc import Forward, Proxy, Request, Server, parse_address
from tools.gottrpc.echo import EchoService


async def _serve(address: str) -> None:
    server = Server(EchoService().handlers())
    await server.start(parse_address(address))
    print("ready", flush=True)
    await asyncio.Event().wait()


async def allow_all(request: Request) -> Forward:
    return Forward(request)


async def _proxy(listen: str, upstream: str) -> None:
    proxy = Proxy(parse_address(upstream), allow_all)
    await proxy.start(parse_address(listen))
    print("ready", flush=True)
    await asyncio.Event().wait()


def run(main: Callable[[], Awaitable[None]], use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop  # optional; only for the comparison rows

        uvloop.run(main())
    else:
        asyncio.run(main())  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    use_uvloop = "--uvloop" in argv
    args = [a for a in argv if a != "--uvloop"]
    if args[:1] == ["serve"] and len(args) == 2:
        run(lambda: _serve(args[1]), use_uvloop)
    elif args[:1] == ["proxy"] and len(args) == 3:
        run(lambda: _proxy(args[1], args[2]), use_uvloop)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0
