"""asyncio ttrpc server: every request runs as its own task, so a call that waits for minutes (WaitProcess,
ReadStdout, GetOOMEvent) never holds up the others on the same connection.

Error replies follow ttrpc-rust v0.9.0: unknown service → INVALID_ARGUMENT "<service> service does not
exist", unknown method → UNIMPLEMENTED "<method> method", a deadline (timeout_nano) that passes →
DEADLINE_EXCEEDED "timeout", a handler failing with anything but `TtrpcError` → UNKNOWN with the error's
repr; frame-level rejections come from the sans-IO core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from ._protocol import DEFAULT_MAX_IN_FLIGHT, FramedProtocol, log
from .address import Address
from .connection import (
    DEADLINE_TEXT,
    Call,
    Event,
    Rejected,
    Reply,
    Role,
    unknown_method_status,
    unknown_service_status,
)
from .errors import TtrpcError
from .frames import MAX_MESSAGE_SIZE
from .messages import Request, Response
from .status import OK_STATUS, Code, Status
from .transport import listen, listening_address

Handler = Callable[[Request], Awaitable[bytes]]


class _ServerConnection(FramedProtocol):
    def __init__(self, server: Server) -> None:
        super().__init__(Role.SERVER, server.max_message_size, server.max_in_flight)
        self._server = server
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)

    def handle_event(self, event: Event) -> None:
        if isinstance(event, Call):
            req = event.request
            handler = self._server._handlers.get((req.service, req.method))
            if handler is None:
                st = (
                    unknown_method_status(req.method)
                    if req.service in self._server._services
                    else unknown_service_status(req.service)
                )
                self.write(self.conn.send(Rejected(event.stream_id, st)))
                return
            self.in_flight += 1
            task = self.loop.create_task(self._run(event.stream_id, handler, req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, Rejected):
            log.info("event=rejected stream=%d code=%s message=%r", event.stream_id, event.status.code.name,
                     event.status.message)
            self.write(self.conn.send(event))

    async def _run(self, stream_id: int, handler: Handler, req: Request) -> None:
        try:
            try:
                if req.timeout_nano > 0:
                    async with asyncio.timeout(req.timeout_nano / 1e9) as scope:
                        try:
                            payload = await handler(req)
                        except TimeoutError:
                            if scope.expired():
                                raise
                            raise RuntimeError("handler raised TimeoutError") from None
                else:
                    payload = await handler(req)
                response = Response(OK_STATUS, payload)
            except TtrpcError as e:
                response = Response(e.status)
            except TimeoutError:
                response = Response(Status(Code.DEADLINE_EXCEEDED, DEADLINE_TEXT))
            except Exception as e:
                log.warning("event=handler_failed service=%s method=%s error=%r", req.service, req.method, e)
                response = Response(Status(Code.UNKNOWN, repr(e)))
            if not self.closed:
                self.write(self.conn.send(Reply(stream_id, response)))
        finally:
            self.call_done()

    def on_close(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        for t in list(self._tasks):
            t.cancel()


class Server:
    """Serves `handlers[(service, method)](request) -> response payload` on one or more addresses."""

    def __init__(
        self,
        handlers: Mapping[tuple[str, str], Handler],
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self._handlers = dict(handlers)
        self._services = {service for service, _ in self._handlers}
        self.max_message_size = max_message_size
        self.max_in_flight = max_in_flight
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_ServerConnection] = set()
        self.addresses: list[Address] = []

    async def start(self, address: Address) -> Address:
        """Listen on `address`; returns the bound address (tcp port 0 resolved)."""
        listener = await listen(lambda: _ServerConnection(self), address)
        self._listeners.append(listener)
        bound = listening_address(listener, address)
        self.addresses.append(bound)
        log.info("event=listening address=%s", bound)
        return bound

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        for c in list(self._connections):
            c.close()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
