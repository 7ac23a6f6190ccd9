"""Sans-IO ttrpc connection, in the style of h11: bytes in, events out, events in, bytes out.

    conn = Connection(Role.SERVER)
    conn.receive_data(data)            # b"" signals EOF
    while (ev := conn.next_event()) is not NEED_DATA: ...
    transport.write(conn.send(Reply(stream_id, response)))

Events: `Call` (a decoded Request, server side), `Reply` (a decoded Response, client side), `Rejected` (a
stream that must fail with a status: on the server, the reply to send; on the client, the error for that
call), and `Closed` (the peer closed the byte stream). Nothing here touches a socket or imports asyncio.

Which frames are rejected, with which code and text, follows ttrpc-rust v0.9.0, the server kata-agent runs:
the odd-id check comes first and applies to every frame type; oversize frames are
answered on their stream after the body was dropped; Data frames are answered "Stream is no longer
active" because every stream is unary; frames of unknown type are ignored. The client side follows Go's
client: an oversize or undecodable response fails only its own call.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

from .errors import LocalProtocolError
from .frames import (
    HEADER,
    MAX_MESSAGE_SIZE,
    MAX_STREAM_ID,
    Flags,
    Frame,
    FrameReader,
    MessageType,
    Oversized,
)
from .messages import (
    EnvelopeError,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from .status import OK_STATUS, Code, Status


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Call(NamedTuple):
    stream_id: int
    request: Request


class Reply(NamedTuple):
    stream_id: int
    response: Response


class Rejected(NamedTuple):
    stream_id: int
    status: Status


class Closed(NamedTuple):
    """EOF from the peer. `truncated` is True if it arrived in the middle of a frame."""

    truncated: bool = False


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")

Event = Call | Reply | Rejected | Closed


# ttrpc-rust's texts, kept in one place so tests and the proxy use the same strings.
def oversize_text(length: int, limit: int) -> str:
    return f"message length {length} exceed maximum message size of {limit}"


ODD_STREAM_ID_TEXT = "stream id must be odd"
INACTIVE_STREAM_TEXT = "Stream is no longer active"
DEADLINE_TEXT = "timeout"


def data_close_text(stream_id: int) -> str:
    return f"Stream id {stream_id}: data close message connot include data"  # sic, as ttrpc-rust


def unknown_service_status(service: str) -> Status:
    return Status(Code.INVALID_ARGUMENT, f"{service} service does not exist")


def unknown_method_status(method: str) -> Status:
    return Status(Code.UNIMPLEMENTED, f"{method} method")


MIN_MESSAGE_SIZE = 256


def check_message_size(max_message_size: int) -> None:
    if not MIN_MESSAGE_SIZE <= max_message_size <= MAX_STREAM_ID:
        # Below the minimum even our own error replies would not fit in a frame.
        raise ValueError(
            f"max_message_size must be within {MIN_MESSAGE_SIZE}..{MAX_STREAM_ID}, got {max_message_size}"
        )


class Connection:
    __slots__ = ("_closed", "_max", "_next_id", "_reader", "role")

    def __init__(self, role: Role, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        check_message_size(max_message_size)
        self.role = role
        self._max = max_message_size
        self._reader = FrameReader(max_message_size)
        self._next_id = 1  # Go's client starts at 1 and adds 2
        self._closed: Closed | None = None

    @property
    def max_message_size(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        return self._reader.buffered

    def new_stream_id(self) -> int:
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client opens streams")
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted on this connection; open a new one")
        self._next_id = sid + 2
        return sid

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed is not None:
            if data:
                raise LocalProtocolError("receive_data after EOF")
            return
        if not data:
            self._closed = Closed(self._reader.in_frame)
            return
        self._reader.feed(data)

    def next_event(self) -> Event | _Sentinel:
        reader = self._reader
        while True:
            frame = reader.next()
            if frame is None:
                if self._closed is not None:
                    return self._closed
                return NEED_DATA
            ev = self._server_event(frame) if self.role is Role.SERVER else self._client_event(frame)
            if ev is not None:
                return ev

    def send_ok(self, stream_id: int, payload: bytes) -> bytes:
        """Bytes of a successful Response; the same as send(Reply(stream_id, Response(OK, payload)))."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("a client does not send responses")
        body = encode_response(Response(OK_STATUS, payload))
        if len(body) > self._max:
            return self.send(Reply(stream_id, Response(OK_STATUS, payload)))
        return HEADER.pack(len(body), stream_id, MessageType.RESPONSE, 0) + body

    def send(self, event: Call | Reply | Rejected) -> bytes:
        """Bytes for one outgoing event. Raises LocalProtocolError if it cannot be framed."""
        if type(event) is Call:
            if self.role is not Role.CLIENT:
                raise LocalProtocolError("a server does not send requests")
            if event.stream_id % 2 != 1:
                raise LocalProtocolError(f"client stream ids must be odd, got {event.stream_id}")
            return self._frame(event.stream_id, MessageType.REQUEST, encode_request(event.request))
        if self.role is not Role.SERVER:
            raise LocalProtocolError("a client does not send responses")
        response = event.response if type(event) is Reply else Response(event.status)  # type: ignore[union-attr]
        try:
            payload = encode_response(response)
        except EnvelopeError:  # e.g. a status message with a lone surrogate: still answer the stream
            payload = encode_response(Response(Status(Code.UNKNOWN, "ttrpc: response could not be encoded")))
        if len(payload) > self._max:
            # ttrpc-rust's check_oversize before respond: the reply becomes an error status. (An error reply
            # can be too big itself, e.g. "<service> service does not exist" for a huge service name.)
            too_big = Status(Code.INVALID_ARGUMENT, oversize_text(len(payload), self._max))
            payload = encode_response(Response(too_big))
        return self._frame(event.stream_id, MessageType.RESPONSE, payload)

    def _frame(self, stream_id: int, type_: int, payload: bytes) -> bytes:
        n = len(payload)
        if n > self._max:
            raise LocalProtocolError(oversize_text(n, self._max))
        if not 0 <= stream_id <= MAX_STREAM_ID:
            raise LocalProtocolError(f"stream id {stream_id} is outside 0..{MAX_STREAM_ID}")
        return HEADER.pack(n, stream_id, type_, 0) + payload

    def _server_event(self, frame: Frame | Oversized) -> Event | None:
        sid = frame.stream_id
        if isinstance(frame, Oversized):
            return Rejected(sid, Status(Code.INVALID_ARGUMENT, oversize_text(frame.length, self._max)))
        if sid % 2 != 1:
            return Rejected(sid, Status(Code.INVALID_ARGUMENT, ODD_STREAM_ID_TEXT))
        t = frame.type
        if t == MessageType.REQUEST:
            try:
                return Call(sid, decode_request(frame.payload))
            except EnvelopeError as e:
                return Rejected(sid, Status(Code.INVALID_ARGUMENT, str(e)))
        if t == MessageType.DATA:
            if frame.flags & Flags.REMOTE_CLOSED and frame.payload:
                return Rejected(sid, Status(Code.INVALID_ARGUMENT, data_close_text(sid)))
            return Rejected(sid, Status(Code.INVALID_ARGUMENT, INACTIVE_STREAM_TEXT))
        return None  # unknown type (or a Response sent to a server): ignored, as ttrpc-rust does

    def _client_event(self, frame: Frame | Oversized) -> Event | None:
        sid = frame.stream_id
        if isinstance(frame, Oversized):
            # Go's channel.recv: RESOURCE_EXHAUSTED for that stream only; the connection stays usable.
            return Rejected(sid, Status(Code.RESOURCE_EXHAUSTED, oversize_text(frame.length, self._max)))
        if frame.type == MessageType.RESPONSE:
            try:
                return Reply(sid, decode_response(frame.payload))
            except EnvelopeError as e:
                return Rejected(sid, Status(Code.INTERNAL, f"invalid response envelope: {e}"))
        return None  # Data or unknown frames: no streaming support, ignored like Go ignores inactive streams
