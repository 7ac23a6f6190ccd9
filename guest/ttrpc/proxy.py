"""Forwarding proxy core: a listener where every downstream connection gets its own upstream connection,
and an interceptor that sees each decoded request first.

The interceptor returns `Forward(request)` (possibly rewritten; `on_response` may rewrite the reply) or
`Answer(response)` (the upstream never sees the request). What goes upstream is always re-encoded from the
`Request` the interceptor returned, never the downstream bytes, so no parser difference can smuggle
anything past it. Requests on one connection are intercepted and forwarded concurrently.

Failure rules (fail closed): an interceptor or `on_response` that raises → INTERNAL to the client and
nothing forwarded; frames the core rejects (oversize, even stream id, garbage envelope, stray Data) are
answered by the proxy as ttrpc-rust would and never reach the upstream; a request whose timeout_nano
passes without an upstream reply → DEADLINE_EXCEEDED "timeout"; if the upstream connection dies, the
downstream connection is closed too (the Kata runtime then redials).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from ._eager import Resumed, as_coroutine
from ._protocol import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_BYTES, FramedProtocol, log
from .address import Address
from .connection import DEADLINE_TEXT, Call, Event, Rejected, Reply, Role, check_message_size
from .errors import LocalProtocolError
from .frames import MAX_MESSAGE_SIZE
from .messages import EnvelopeError, Request, Response
from .status import Code, Status
from .transport import connect, listen, listening_address, shut_down

INTERCEPTOR_FAILED_TEXT = "ttrpc proxy: request could not be checked"
RESPONSE_HOOK_FAILED_TEXT = "ttrpc proxy: response could not be checked"
UPSTREAM_CLOSED_TEXT = "ttrpc proxy: upstream connection closed"


@dataclass(frozen=True, slots=True)
class Forward:
    request: Request
    on_response: Callable[[Response], Awaitable[Response]] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    response: Response


Interceptor = Callable[[Request], Awaitable[Forward | Answer]]


@dataclass(slots=True)
class _Pending:
    down_sid: int
    on_response: Callable[[Response], Awaitable[Response]] | None
    timer: asyncio.TimerHandle | None


class _Upstream(FramedProtocol):
    """Client side towards the agent; replies are routed back to the downstream connection."""

    def __init__(self, down: _Downstream) -> None:
        super().__init__(Role.CLIENT, down.conn.max_message_size, DEFAULT_MAX_IN_FLIGHT)
        self.down = down

    def _blocked(self) -> bool:
        # Never stop reading replies because the agent is slow to read requests (that could deadlock);
        # stop only when the runtime is not reading the replies we pass on.
        return self.down._write_paused

    def handle_event(self, event: Event) -> None:
        if isinstance(event, Reply):
            self.down.upstream_reply(event.stream_id, event.response)
        elif isinstance(event, Rejected):
            self.down.upstream_reply(event.stream_id, Response(event.status))

    def pause_writing(self) -> None:
        super().pause_writing()
        self.down.update_reading()  # the agent is not reading: stop taking requests

    def resume_writing(self) -> None:
        super().resume_writing()
        self.down.update_reading()

    def on_close(self, exc: Exception | None) -> None:
        self.down.upstream_lost()


class _Downstream(FramedProtocol):
    def __init__(self, proxy: Proxy) -> None:
        super().__init__(Role.SERVER, proxy.max_message_size, proxy.max_in_flight)
        self.max_in_flight_bytes = proxy.max_in_flight_bytes
        self.proxy = proxy
        self.up: _Upstream | None = None
        self.pending: dict[int, _Pending] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy._connections.add(self)
        # Hold the downstream bytes until the upstream connection exists.
        self.in_flight += 1 << 40
        self.update_reading()
        self._connecting = self.loop.create_task(self._connect_upstream())

    async def _connect_upstream(self) -> None:
        try:
            _, proto = await connect(lambda: _Upstream(self), self.proxy.upstream)
        except OSError as e:
            log.warning("event=upstream_connect_failed upstream=%s error=%r", self.proxy.upstream, e)
            self.close()
            return
        up = cast(_Upstream, proto)
        if self.closed:
            up.close()
            return
        self.up = up
        self.partner = up
        up.partner = self
        self.in_flight -= 1 << 40
        self.update_reading()

    def _blocked(self) -> bool:
        up = self.up
        return super()._blocked() or (up is not None and up._write_paused)

    # -- downstream → upstream ------------------------------------------------------------------------
    def handle_event(self, event: Event) -> None:
        if type(event) is Call:
            sid, request = event
            self.in_flight += 1
            try:
                coro = as_coroutine(self.proxy.interceptor(request))
            except Exception as e:
                self._interceptor_failed(sid, request, e)
                return
            if self.proxy.eager:
                try:
                    first = coro.send(None)
                except StopIteration as e:
                    self._decided(sid, request, e.value)
                    return
                except Exception as e:
                    self._interceptor_failed(sid, request, e)
                    return
                coro = Resumed(coro, first)
            self.in_flight_bytes += len(request.payload)
            task = self.loop.create_task(self._intercept(sid, request, coro))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, Rejected):
            log.debug("event=rejected stream=%d code=%s message=%r", event.stream_id, event.status.code.name,
                     event.status.message)
            self.write(self.conn.send(event))

    async def _intercept(self, down_sid: int, request: Request, coro: Coroutine[Any, Any, object]) -> None:
        try:
            decision = await coro
        except asyncio.CancelledError:
            self.bytes_done(len(request.payload))
            self.call_done()
            raise
        except Exception as e:
            self.bytes_done(len(request.payload))
            self._interceptor_failed(down_sid, request, e)
            return
        self.bytes_done(len(request.payload))
        self._decided(down_sid, request, decision)

    def _interceptor_failed(self, down_sid: int, request: Request, error: BaseException) -> None:
        log.error("event=interceptor_failed service=%s method=%s error=%r",
                  request.service, request.method, error)
        self.reply(down_sid, Response(Status(Code.INTERNAL, INTERCEPTOR_FAILED_TEXT)))

    def _decided(self, down_sid: int, request: Request, decision: object) -> None:
        if type(decision) is Forward:
            self._forward(down_sid, decision)
        elif type(decision) is Answer:
            self.reply(down_sid, decision.response)
        else:
            error = TypeError(f"interceptor returned {type(decision).__name__}, not Forward or Answer")
            self._interceptor_failed(down_sid, request, error)

    def _forward(self, down_sid: int, decision: Forward) -> None:
        up = self.up
        if up is None or up.closed:
            self.reply(down_sid, Response(Status(Code.UNAVAILABLE, UPSTREAM_CLOSED_TEXT)))
            return
        fwd = decision.request
        try:
            sid = up.conn.new_stream_id()
            data = up.conn.send(Call(sid, fwd))
        except LocalProtocolError as e:
            self.reply(down_sid, Response(Status(Code.RESOURCE_EXHAUSTED, str(e))))
            return
        except EnvelopeError as e:  # e.g. an interceptor put a lone surrogate into a string field
            self._interceptor_failed(down_sid, fwd, e)
            return
        timer = None
        if fwd.timeout_nano > 0:
            timer = self.loop.call_later(fwd.timeout_nano / 1e9, self._expire, sid)
        self.pending[sid] = _Pending(down_sid, decision.on_response, timer)
        up.write(data)

    def _expire(self, up_sid: int) -> None:
        p = self.pending.pop(up_sid, None)
        if p is not None:
            self.reply(p.down_sid, Response(Status(Code.DEADLINE_EXCEEDED, DEADLINE_TEXT)))

    # -- upstream → downstream ------------------------------------------------------------------------
    def upstream_reply(self, up_sid: int, response: Response) -> None:
        p = self.pending.pop(up_sid, None)
        if p is None:
            return  # expired, or a stream the upstream made up
        if p.timer is not None:
            p.timer.cancel()
        if p.on_response is None:
            self.reply(p.down_sid, response)
            return
        task = self.loop.create_task(self._rewrite(p.down_sid, p.on_response, response))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _rewrite(self, down_sid: int, hook: Callable[[Response], Awaitable[Response]],
                       response: Response) -> None:
        try:
            out = await hook(response)
            if not isinstance(out, Response):
                raise TypeError(f"on_response returned {type(out).__name__}, not Response")
        except asyncio.CancelledError:
            self.call_done()
            raise
        except Exception as e:
            log.error("event=response_hook_failed error=%r", e)
            out = Response(Status(Code.INTERNAL, RESPONSE_HOOK_FAILED_TEXT))
        self.reply(down_sid, out)

    def reply(self, down_sid: int, response: Response) -> None:
        """Send the final reply for one downstream call and release its in-flight slot."""
        if not self.closed:
            self.write(self.conn.send(Reply(down_sid, response)))
        self.call_done()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.up is not None:
            self.up.update_reading()  # the runtime is not reading replies: stop taking them from the agent

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.up is not None:
            self.up.update_reading()

    def upstream_lost(self) -> None:
        pending, self.pending = self.pending, {}
        for p in pending.values():
            if p.timer is not None:
                p.timer.cancel()
            self.reply(p.down_sid, Response(Status(Code.UNAVAILABLE, UPSTREAM_CLOSED_TEXT)))
        self.close()

    def on_close(self, exc: Exception | None) -> None:
        self.proxy._connections.discard(self)
        if self._connecting is not None:
            self._connecting.cancel()
        for t in list(self.tasks):
            t.cancel()
        for p in self.pending.values():
            if p.timer is not None:
                p.timer.cancel()
        self.pending.clear()
        if self.up is not None:
            self.up.close()


def _abort_both(c: _Downstream) -> None:
    if c.up is not None:
        c.up.abort()
    c.abort()


class Proxy:
    def __init__(
        self,
        upstream: Address,
        interceptor: Interceptor,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
        eager: bool = True,
    ) -> None:
        check_message_size(max_message_size)
        self.max_in_flight_bytes = max_in_flight_bytes
        self.upstream = upstream
        self.eager = eager
        self.interceptor = interceptor
        self.max_message_size = max_message_size
        self.max_in_flight = max_in_flight
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_Downstream] = set()

    async def start(self, listen_address: Address) -> Address:
        listener = await listen(lambda: _Downstream(self), listen_address)
        self._listeners.append(listener)
        bound = listening_address(listener, listen_address)
        log.info("event=proxy_listening address=%s upstream=%s", bound, self.upstream)
        return bound

    async def close(self) -> None:
        await shut_down(self._listeners, self._connections, _abort_both)

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
