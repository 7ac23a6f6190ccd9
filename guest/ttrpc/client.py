"""asyncio ttrpc client: many concurrent calls multiplexed on one connection.

Deadlines go on the wire as timeout_nano (the server may enforce them too) and are enforced here: when a
call's time is up it fails with DEADLINE_EXCEEDED and a late reply is dropped, as Go's client does.
Statuses from Go servers (RESOURCE_EXHAUSTED for oversize, UNIMPLEMENTED for unknown services) and from
Rust servers are passed to the caller unchanged.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import cast

from ._protocol import DEFAULT_MAX_IN_FLIGHT, FramedProtocol
from .address import Address
from .connection import Call, Event, Rejected, Reply, Role, check_message_size
from .errors import ConnectionClosedError, LocalProtocolError, TtrpcError
from .frames import MAX_MESSAGE_SIZE
from .messages import Metadata, Request, Response
from .status import Code, Status
from .transport import connect

DEADLINE_EXCEEDED_TEXT = "context deadline exceeded"


class _ClientConnection(FramedProtocol):
    def __init__(self, max_message_size: int) -> None:
        super().__init__(Role.CLIENT, max_message_size, DEFAULT_MAX_IN_FLIGHT)
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.close_reason: str = "ttrpc: closed"

    def _blocked(self) -> bool:
        return False  # replies only shrink the pending set, so a client always reads

    def handle_event(self, event: Event) -> None:
        if isinstance(event, Reply):
            fut = self.pending.pop(event.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event.response)
        elif isinstance(event, Rejected):
            fut = self.pending.pop(event.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_result(Response(event.status))

    def on_close(self, exc: Exception | None) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosedError(self.close_reason))


class Client:
    def __init__(self, *, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        check_message_size(max_message_size)
        self._max = max_message_size
        self._proto: _ClientConnection | None = None

    async def connect(self, address: Address) -> Client:
        _, proto = await connect(lambda: _ClientConnection(self._max), address)
        self._proto = cast(_ClientConnection, proto)
        return self

    async def connect_socket(self, sock: socket.socket) -> Client:
        """Use an already connected stream socket (e.g. after Kata's hybrid-vsock handshake)."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: _ClientConnection(self._max), sock=sock)
        self._proto = proto
        return self

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.closed

    async def request(self, request: Request, timeout: float | None = None) -> Response:  # noqa: ASYNC109
        """Send one Request and return its Response, whatever the status (no exception for errors)."""
        proto = self._proto
        if proto is None or proto.closed:
            raise ConnectionClosedError()
        if timeout is not None and request.timeout_nano == 0:
            request = Request(request.service, request.method, request.payload,
                              max(1, int(timeout * 1e9)), request.metadata)
        conn = proto.conn
        try:
            sid = conn.new_stream_id()
            data = conn.send(Call(sid, request))
        except LocalProtocolError as e:
            # e.g. an oversize request: Go's client fails the call with RESOURCE_EXHAUSTED before sending.
            return Response(Status(Code.RESOURCE_EXHAUSTED, str(e)))
        fut: asyncio.Future[Response] = proto.loop.create_future()
        proto.pending[sid] = fut
        proto.write(data)
        timer = None
        if timeout is not None:
            timer = proto.loop.call_later(max(timeout, 0.0), _expire, proto, sid, fut)
        try:
            if proto._write_paused:
                await proto.drain()
            return await fut
        except asyncio.CancelledError:
            proto.pending.pop(sid, None)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout: float | None = None,  # noqa: ASYNC109 (part of the API; becomes timeout_nano on the wire)
        metadata: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """Unary call; returns the response payload or raises `TtrpcError` with the status."""
        md: Metadata = tuple(metadata)
        resp = await self.request(Request(service, method, payload, 0, md), timeout)
        if resp.status.code != Code.OK:
            raise TtrpcError(resp.status)
        return resp.payload

    async def close(self) -> None:
        proto = self._proto
        if proto is not None:
            proto.close_reason = "ttrpc: client closed"
            proto.close()
            # Let connection_lost run so pending calls fail now rather than later.
            await asyncio.sleep(0)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _expire(proto: _ClientConnection, sid: int, fut: asyncio.Future[Response]) -> None:
    if proto.pending.pop(sid, None) is not None and not fut.done():
        fut.set_result(Response(Status(Code.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED_TEXT)))
