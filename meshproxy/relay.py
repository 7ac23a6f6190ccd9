"""The data path: an asyncio adapter that pumps bytes between a TLS socket and a plaintext socket.

Theory of operation. Both sockets are non-blocking and driven by ``loop.add_reader``/``add_writer``
callbacks rather than streams or coroutines: one readiness event costs one callback, one ``recv_into`` of up
to ``RECV_SIZE`` bytes, a few C calls into the ``TLSSession`` and one ``send``. The receive and plaintext
buffers are shared by every relay of the loop (callbacks run one at a time and finish their work before
returning), so an idle or slow connection owns no large buffer: only a partial write is copied out.

Backpressure: when a write is short, the rest is kept and the socket that feeds it stops being read until
the writer drains. So each relay holds at most one pending chunk per direction.

End of stream: a TLS close_notify becomes ``shutdown(SHUT_WR)`` on the plaintext side once pending data is
written; plaintext EOF becomes our close_notify plus ``SHUT_WR``; the relay closes when both directions
ended. A transport EOF without close_notify (truncation) resets the plaintext side instead of ending it
cleanly, so the application never mistakes an attacker's cut for the end of a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from meshproxy.session import TLSProtocolError, TLSSession, TruncatedError

log = logging.getLogger("meshproxy.relay")

RECV_SIZE = 1 << 20
PLAIN_SIZE = RECV_SIZE + (64 << 10)  # room for records left in the BIO from the previous read


class Buffers:
    """Per-loop scratch buffers shared by all relays (see module docstring)."""

    def __init__(self, recv_size: int = RECV_SIZE) -> None:
        self.recv = memoryview(bytearray(recv_size))
        self.plain = memoryview(bytearray(recv_size + (64 << 10)))


class DirectionStats:
    """Counters a relay increments in place (plain attribute adds are the cheapest we can do)."""

    __slots__ = ("plain_to_tls", "tls_to_plain")

    def __init__(self) -> None:
        self.tls_to_plain = 0
        self.plain_to_tls = 0


_RST_LINGER = struct.pack("ii", 1, 0)


class Relay:
    """Relays one connection; ``on_close(relay)`` is called exactly once when both sockets are closed."""

    __slots__ = (
        "_buffers", "_loop", "_on_close", "_plain", "_plain_pending", "_plain_reading", "_plain_shut_pending",
        "_session", "_stats", "_tls", "_tls_pending", "_tls_reading", "_tls_shut_pending", "active", "closed",
        "idle_time", "plain_eof", "tls_eof",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, tls_sock: socket.socket, plain_sock: socket.socket,
                 session: TLSSession, stats: DirectionStats, buffers: Buffers,
                 on_close: Callable[[Relay], Any]) -> None:
        self._loop = loop
        self._tls = tls_sock
        self._plain = plain_sock
        self._session = session
        self._stats = stats
        self._buffers = buffers
        self._on_close = on_close
        self._tls_pending: memoryview | None = None
        self._plain_pending: memoryview | None = None
        self._tls_reading = False
        self._plain_reading = False
        self._tls_shut_pending = False
        self._plain_shut_pending = False
        self.tls_eof = False  # no more plaintext will come from the TLS peer
        self.plain_eof = False  # no more plaintext will come from the plaintext peer
        self.closed = False
        self.active = True  # set on every read; cleared by the idle sweeper
        self.idle_time = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        # The handshake may have left application data (sent with the client's Finished) in the BIO.
        self._drain_session()
        self._flush_session()
        self._update_interest()

    def abort(self, reset_plain: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self._tls, self._plain):
            fd = sock.fileno()
            if fd >= 0:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        if reset_plain:
            with contextlib.suppress(OSError):
                self._plain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
        self._tls.close()
        self._plain.close()
        self._on_close(self)

    def _maybe_finish(self) -> None:
        if (self.tls_eof and self.plain_eof and self._tls_pending is None and self._plain_pending is None
                and not self._tls_shut_pending and not self._plain_shut_pending):
            self.abort()

    def _update_interest(self) -> None:
        if self.closed:
            return
        want_tls = not self.tls_eof and self._plain_pending is None
        if want_tls != self._tls_reading:
            self._tls_reading = want_tls
            if want_tls:
                self._loop.add_reader(self._tls.fileno(), self._on_tls_readable)
            else:
                self._loop.remove_reader(self._tls.fileno())
        want_plain = not self.plain_eof and self._tls_pending is None
        if want_plain != self._plain_reading:
            self._plain_reading = want_plain
            if want_plain:
                self._loop.add_reader(self._plain.fileno(), self._on_plain_readable)
            else:
                self._loop.remove_reader(self._plain.fileno())

    # -- TLS -> plaintext --------------------------------------------------------------------------

    def _on_tls_readable(self) -> None:
        buffers = self._buffers
        try:
            n = self._tls.recv_into(buffers.recv)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort(reset_plain=True)
            return
        self.active = True
        if n:
            self._session.receive_ciphertext(buffers.recv[:n])
        else:
            self._session.receive_eof()
        self._drain_session()
        self._flush_session()
        if not self.closed:
            self._update_interest()
            self._maybe_finish()

    def _drain_session(self) -> None:
        session = self._session
        plain = self._buffers.plain
        while not self.closed and self._plain_pending is None and not self.tls_eof:
            try:
                m = session.read_plaintext(plain)
            except TruncatedError:
                log.info("event=truncated_stream action=reset_plaintext")
                self.abort(reset_plain=True)
                return
            except TLSProtocolError as exc:
                log.info("event=tls_error error=%r", str(exc))
                self.abort(reset_plain=True)
                return
            if m:
                self._stats.tls_to_plain += m
                self._send_plain(plain[:m])
            if session.peer_closed:
                self.tls_eof = True
                self._plain_shut_pending = True
                if self._plain_pending is None:
                    self._shutdown_plain()
                return
            if m < len(plain):
                return

    def _send(self, sock: socket.socket, data: memoryview) -> int | None:
        """Bytes the socket took (0 when it is full); None after a socket error, which aborts the relay."""
        try:
            return sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.abort()
            return None

    def _send_plain(self, data: memoryview) -> None:
        sent = self._send(self._plain, data)
        if sent is None:
            return
        if sent < len(data):
            # data lives in the shared buffer: keep a private copy of the rest
            self._plain_pending = memoryview(bytes(data[sent:]))
            self._loop.add_writer(self._plain.fileno(), self._on_plain_writable)

    def _on_plain_writable(self) -> None:
        pending = self._plain_pending
        if pending is None:
            return
        sent = self._send(self._plain, pending)
        if sent is None:
            return
        if sent < len(pending):
            self._plain_pending = pending[sent:]
            return
        self._plain_pending = None
        self._loop.remove_writer(self._plain.fileno())
        if self._plain_shut_pending:
            self._shutdown_plain()
        self._drain_session()  # records may still wait in the BIO
        self._flush_session()
        if not self.closed:
            self._update_interest()
            self._maybe_finish()

    def _shutdown_plain(self) -> None:
        self._plain_shut_pending = False
        with contextlib.suppress(OSError):
            self._plain.shutdown(socket.SHUT_WR)

    # -- plaintext -> TLS --------------------------------------------------------------------------

    def _on_plain_readable(self) -> None:
        buffers = self._buffers
        try:
            n = self._plain.recv_into(buffers.recv)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        self.active = True
        if n:
            self._stats.plain_to_tls += n
            self._session.send_plaintext(buffers.recv[:n])
        else:
            self.plain_eof = True
            self._session.close()
            self._tls_shut_pending = True
        self._flush_session()
        if not self.closed:
            self._update_interest()
            self._maybe_finish()

    def _flush_session(self) -> None:
        if self.closed:
            return
        session = self._session
        if session.has_data_to_send:
            data = session.data_to_send()
            if self._tls_pending is not None:
                self._tls_pending = memoryview(bytes(self._tls_pending) + data)
            else:
                self._send_tls(memoryview(data))
        if self._tls_shut_pending and self._tls_pending is None and not self.closed:
            self._shutdown_tls()

    def _send_tls(self, data: memoryview) -> None:
        sent = self._send(self._tls, data)
        if sent is None:
            return
        if sent < len(data):
            self._tls_pending = data[sent:]
            self._loop.add_writer(self._tls.fileno(), self._on_tls_writable)

    def _on_tls_writable(self) -> None:
        pending = self._tls_pending
        if pending is None:
            return
        sent = self._send(self._tls, pending)
        if sent is None:
            return
        if sent < len(pending):
            self._tls_pending = pending[sent:]
            return
        self._tls_pending = None
        self._loop.remove_writer(self._tls.fileno())
        self._flush_session()
        if not self.closed:
            self._update_interest()
            self._maybe_finish()

    def _shutdown_tls(self) -> None:
        self._tls_shut_pending = False
        with contextlib.suppress(OSError):
            self._tls.shutdown(socket.SHUT_WR)
