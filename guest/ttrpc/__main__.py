"""python -m guest.ttrpc demo | proxy LISTEN UPSTREAM

`demo` runs guest.ttrpc.demo; `proxy` forwards every request unchanged (a transparent ttrpc proxy that logs
each call, useful for looking at what a runtime sends), e.g.
    python -m guest.ttrpc proxy unix:///run/proxy.sock vsock://3:1024
"""

from __future__ import annotations

import asyncio
import logging
import sys

from .address import parse_address
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


def main(argv: list[str]) -> int:
    if argv[:1] == ["demo"] or not argv:
        from .demo import main as demo_main

        return demo_main()
    if argv[:1] == ["proxy"] and len(argv) == 3:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        try:
            asyncio.run(_proxy(argv[1], argv[2]))
        except KeyboardInterrupt:
            return 0
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
