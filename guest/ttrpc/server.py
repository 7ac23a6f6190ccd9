"""asyncio ttrpc server: every request runs as its own task, so a call that waits for minutes (WaitProcess,
ReadStdout, GetOOMEvent) never holds up the others on the same connection.

Error replies follow ttrpc-rust v0.9.0: unknown service → INVALID_ARGUMENT "<service> service does not
exist", unknown method → UNIMPLEMENTED "<method> method", a deadline (timeout_nano) that passes →
DEADLINE_EXCEEDED "timeout", a handler failing with anything but `TtrpcError` → UNKNOWN with the error's
repr; frame-level rejections come from the sans-IO core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from ._eager import Resumed, as_coroutine
from ._protocol import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_BYTES, FramedProtocol, log
from .address import Address
from .connection import (
    DEADLINE_TEXT,
    Call,
    Event,
    Rejected,
    Reply,
    Role,
    check_message_size,
    unknown_method_status,
    unknown_service_status,
)
from .errors import TtrpcError
from .frames import MAX_MESSAGE_SIZE
from .messages import Request, Response
from .status import Code, Status
from .transport import listen, listening_address, shut_down

Handler = Callable[[Request], Awaitable[bytes]]


class _ServerConnection(FramedProtocol):
    def __init__(self, server: Server) -> None:
        super().__init__(Role.SERVER, server.max_message_size, server.max_in_flight)
        self.max_in_flight_bytes = server.max_in_flight_bytes
        self._server = server
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)

    def handle_event(self, event: Event) -> None:
        if type(event) is Call:
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
            try:
                runner = as_coroutine(handler(req))
            except Exception as e:  # a handler that fails before returning its awaitable
                self._reply(event.stream_id, req, None, e)
                return
            if self._server.eager:
                try:
                    first = runner.send(None)
                except StopIteration as e:
                    self._reply(event.stream_id, req, e.value, None)
                    return
                except Exception as e:
                    self._reply(event.stream_id, req, None, e)
                    return
                runner = Resumed(runner, first)
            self.in_flight += 1
            self.in_flight_bytes += len(req.payload)
            task = self.loop.create_task(self._run(event.stream_id, runner, req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, Rejected):
            log.debug("event=rejected stream=%d code=%s message=%r", event.stream_id, event.status.code.name,
                     event.status.message)
            self.write(self.conn.send(event))

    def _reply(self, stream_id: int, req: Request, payload: object, error: BaseException | None) -> None:
        if error is None and type(payload) is not bytes:
            if isinstance(payload, bytearray | memoryview):
                payload = bytes(payload)
            else:
                error = TypeError(f"handler returned {type(payload).__name__}, not bytes")
        if error is None:
            if not self.closed:
                self.write(self.conn.send_ok(stream_id, payload))  # type: ignore[arg-type]
            return
        if isinstance(error, TtrpcError):
            response = Response(error.status)
        else:
            log.warning("event=handler_failed service=%s method=%s error=%r", req.service, req.method, error)
            response = Response(Status(Code.UNKNOWN, repr(error)))
        if not self.closed:
            self.write(self.conn.send(Reply(stream_id, response)))

    async def _run(self, stream_id: int, runner: Coroutine[Any, Any, bytes], req: Request) -> None:
        try:
            try:
                if req.timeout_nano > 0:
                    async with asyncio.timeout(req.timeout_nano / 1e9) as scope:
                        try:
                            payload = await runner
                        except TimeoutError:
                            if scope.expired():
                                raise
                            raise RuntimeError("handler raised TimeoutError") from None
                else:
                    payload = await runner
            except TimeoutError:
                if not self.closed:
                    deadline = Response(Status(Code.DEADLINE_EXCEEDED, DEADLINE_TEXT))
                    self.write(self.conn.send(Reply(stream_id, deadline)))
                return
            except Exception as e:
                self._reply(stream_id, req, None, e)
                return
            self._reply(stream_id, req, payload, None)
        finally:
            self.in_flight_bytes -= len(req.payload)
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
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
        eager: bool = True,
    ) -> None:
        check_message_size(max_message_size)
        self.max_in_flight_bytes = max_in_flight_bytes
        self._handlers = dict(handlers)
        self.eager = eager
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
        await shut_down(self._listeners, self._connections, lambda c: c.abort())

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
