"""Shared asyncio plumbing: one `Connection` per transport, output batching and flow control.

Memory per connection is bounded by construction: the sans-IO reader holds at most one frame plus one
read chunk; when `max_in_flight` calls are pending or the peer stops reading our replies (the transport's
write buffer passes its high-water mark) we stop reading from the socket, so a peer cannot make us
queue more work. Pausing one connection never affects another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from .connection import NEED_DATA, Closed, Connection, Event, Role

log = logging.getLogger("guest.ttrpc")

DEFAULT_MAX_IN_FLIGHT = 4096
# Request payloads held by handlers/interceptors that are still waiting; with 4 MiB frames the call cap
# alone would allow 16 GiB per connection.
DEFAULT_MAX_IN_FLIGHT_BYTES = 64 << 20


READ_CHUNK = 64 * 1024


class FramedProtocol(asyncio.BufferedProtocol):
    def __init__(self, role: Role, max_message_size: int, max_in_flight: int) -> None:
        self.conn = Connection(role, max_message_size)
        # Reads land in one preallocated buffer (BufferedProtocol): a plain Protocol makes asyncio allocate
        # a fresh 256 KiB bytes object per recv, which costs three mmap syscalls per read.
        self._rbuf = memoryview(bytearray(READ_CHUNK))
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.max_in_flight_bytes = DEFAULT_MAX_IN_FLIGHT_BYTES
        self.in_flight_bytes = 0
        self.closed = False
        self._write_paused = False
        self._read_paused = False
        self._out: list[bytes] = []
        self.corked = False
        # The proxy links each downstream connection with its upstream one, so that the requests a single
        # read produces go upstream in one write as well.
        self.partner: FramedProtocol | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []

    # -- subclass hooks -------------------------------------------------------------------------------
    def handle_event(self, event: Event) -> None:
        raise NotImplementedError

    def on_close(self, exc: Exception | None) -> None:
        """Connection gone: fail or cancel whatever is pending."""

    # -- asyncio.Protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement its methods.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.receive_data(self._rbuf[:nbytes])
        self.process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self.process()
        return False  # close; ttrpc-rust also drops the connection on EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        self.on_close(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        self.update_reading()

    # -- event pump -----------------------------------------------------------------------------------
    def _blocked(self) -> bool:
        return (
            self.in_flight >= self.max_in_flight
            or self.in_flight_bytes >= self.max_in_flight_bytes
            or self._write_paused
        )

    def process(self) -> None:
        conn = self.conn
        # Replies produced while we go are written in one batch at the end.
        self.corked = True
        partner = self.partner
        cork_partner = partner is not None and not partner.corked
        if cork_partner:
            partner.corked = True  # type: ignore[union-attr]
        try:
            next_event = conn.next_event
            handle = self.handle_event
            blocked = self._blocked
            while not self.closed and not blocked():
                ev = next_event()
                if ev is NEED_DATA:
                    break
                if isinstance(ev, Closed):
                    if ev.truncated:
                        log.info("event=peer_eof_mid_frame buffered=%d", conn.buffered)
                    self.flush()
                    self.close()
                    break
                try:
                    handle(ev)  # type: ignore[arg-type]
                except Exception:
                    # A bug, not a peer error: drop this connection (fail closed), keep the process.
                    log.exception("event=internal_error role=%s", conn.role.value)
                    self.abort()
                    break
        finally:
            self.corked = False
            if cork_partner:
                partner.corked = False  # type: ignore[union-attr]
        self.flush()
        if cork_partner:
            partner.flush()  # type: ignore[union-attr]
        self.update_reading()

    def update_reading(self) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        if self._blocked():
            if not self._read_paused:
                self._read_paused = True
                t.pause_reading()
        elif self._read_paused:
            self._read_paused = False
            t.resume_reading()
            # Frames already buffered in the core will not cause another data_received.
            self.loop.call_soon(self.process)

    def call_done(self) -> None:
        self.in_flight -= 1
        if self._read_paused and not self._blocked():
            self.update_reading()

    def bytes_done(self, n: int) -> None:
        self.in_flight_bytes -= n
        if self._read_paused and not self._blocked():
            self.update_reading()

    # -- output ---------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write now, or queue while corked (inside `process`) so one read's replies go out in one write."""
        if self.closed:
            return
        if self.corked:
            self._out.append(data)
            return
        t = self.transport
        if t is not None:
            t.write(data)

    def flush(self) -> None:
        out = self._out
        if not out:
            return
        t = self.transport
        if t is not None and not self.closed:
            t.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            fut: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    def close(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    def abort(self) -> None:
        """Drop the connection now, discarding unsent output (a peer that never reads cannot hold us)."""
        t = self.transport
        if t is not None:
            t.abort()
