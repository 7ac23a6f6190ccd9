"""python -m guest.ttrpc demo | proxy LISTEN UPSTREAM

`demo` runs guest.ttrpc.demo; `proxy` forwards every request unchanged (a transparent ttrpc proxy that logs
each call, useful for looking at what a runtime sends), e.g.
    python -m guest.ttrpc proxy unix:///run/proxy.sock vsock://3:1024
"""

from __future__ import annotations

import asyncio
import logging
import sys

from common.cli import ArgumentParser
from common.logs import setup_logging

from .address import parse_address
from .errors import AddressError
from .messages import Request
from .proxy import Forward, Proxy

log = logging.getLogger("guest.ttrpc")


async def _log_and_forward(request: Request) -> Forward:
    log.info("event=request service=%s method=%s payload_bytes=%d timeout_nano=%d", request.service,
             request.method, len(request.payload), request.timeout_nano)
    return Forward(request)


async def _proxy(listen: str, upstream: str) -> None:
    proxy = Proxy(parse_address(upstream), _log_and_forward)
    await proxy.start(parse_address(listen))
    await asyncio.Event().wait()


def _parser() -> tuple[ArgumentParser, ArgumentParser]:
    """The top-level parser and the ``proxy`` subcommand's (which reports bad addresses)."""
    p = ArgumentParser(prog="python -m guest.ttrpc", description="ttrpc tools: the echo-agent demo, or a "
                       "transparent ttrpc proxy that logs every call (to see what a runtime sends).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="run the ttrpc demo: an echo agent behind the proxy (the default)")
    proxy = sub.add_parser("proxy", help="forward every request unchanged and log it",
                           description="Forward every request unchanged and log it, e.g. "
                                       "python -m guest.ttrpc proxy unix:///run/proxy.sock vsock://3:1024")
    proxy.add_argument("listen", help="address to listen on: unix:///PATH, vsock://CID:PORT, tcp://HOST:PORT")
    proxy.add_argument("upstream", help="address of the real ttrpc server, same forms")
    return p, proxy


def main(argv: list[str]) -> int:
    parser, proxy_parser = _parser()
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        from .demo import main as demo_main

        return demo_main()
    for address in (args.listen, args.upstream):
        try:
            parse_address(address)
        except AddressError as exc:
            proxy_parser.error(str(exc))
    setup_logging(logging.INFO)
    try:
        asyncio.run(_proxy(args.listen, args.upstream))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
