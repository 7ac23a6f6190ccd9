"""Python side of the Go peers' test service (ttrpcecho.AgentService/Echo), for tests, bench and tools."""

from __future__ import annotations

import asyncio
import itertools

from guest.ttrpc import Code, Handler, Request, TtrpcError

from . import echo_pb2

SERVICE = "ttrpcecho.AgentService"
METHOD = "Echo"


def request_bytes(id: str, data: bytes = b"", sleep_ms: int = 0, reply_size: int = 0) -> bytes:
    return echo_pb2.EchoRequest(
        id=id, data=data, sleep_ms=sleep_ms, reply_size=reply_size
    ).SerializeToString()


def parse_response(payload: bytes) -> echo_pb2.EchoResponse:
    r = echo_pb2.EchoResponse()
    r.ParseFromString(payload)
    return r


class EchoService:
    """Our counterpart of the Go server's Echo: same fields, same PERMISSION_DENIED rule."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)

    async def echo(self, request: Request) -> bytes:
        req = echo_pb2.EchoRequest()
        req.ParseFromString(request.payload)
        if req.id.startswith("error:"):
            raise TtrpcError(Code.PERMISSION_DENIED, req.id[len("error:") :])
        resp = echo_pb2.EchoResponse(id=req.id, data=req.data, seq=next(self._seq))
        if request.timeout_nano:
            resp.timeout_ms = request.timeout_nano // 1_000_000
        if request.metadata:
            resp.metadata.extend(sorted(f"{k}={v}" for k, v in request.metadata))
        if req.sleep_ms:
            await asyncio.sleep(req.sleep_ms / 1000)
        if req.reply_size:
            resp.data = bytes(req.reply_size)
        return resp.SerializeToString()

    def handlers(self) -> dict[tuple[str, str], Handler]:
        return {(SERVICE, METHOD): self.echo}
