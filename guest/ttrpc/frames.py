"""Frame layout of the ttrpc wire protocol: a 10-byte header and a payload.

    bytes 0..4  payload length, uint32 big-endian (header excluded)
    bytes 4..8  stream id, uint32 big-endian
    byte  8     message type (1 Request, 2 Response, 3 Data)
    byte  9     flags

`FrameReader` cuts a byte stream into frames. It buffers at most one frame: a header announcing more than
`max_message_size` bytes switches it into discard mode, where the body is dropped as it arrives (ttrpc-rust
and Go both read and drop such a body, then answer on that stream), so a hostile length never makes us
allocate.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from .errors import LocalProtocolError

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
_unpack_header = HEADER.unpack_from
MAX_MESSAGE_SIZE = 4 << 20  # 4 MiB, Go messageLengthMax / Rust MESSAGE_LENGTH_MAX
MAX_STREAM_ID = (1 << 32) - 1


class MessageType(enum.IntEnum):
    REQUEST = 0x01
    RESPONSE = 0x02
    DATA = 0x03


class Flags(enum.IntFlag):
    NONE = 0x00
    REMOTE_CLOSED = 0x01
    REMOTE_OPEN = 0x02
    NO_DATA = 0x04


class Frame(NamedTuple):
    stream_id: int
    type: int  # int, not MessageType: unknown types are legal on the wire and ignored by servers
    flags: int
    payload: bytes


class Oversized(NamedTuple):
    """A frame whose announced length exceeded the limit; its body has been discarded."""

    stream_id: int
    type: int
    flags: int
    length: int


def encode_frame(
    stream_id: int, type: int, flags: int, payload: bytes, max_size: int = MAX_MESSAGE_SIZE
) -> bytes:
    if len(payload) > max_size:
        raise LocalProtocolError(f"message length {len(payload)} exceed maximum message size of {max_size}")
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"stream id {stream_id} is outside 0..{MAX_STREAM_ID}")
    if not (0 <= type <= 0xFF and 0 <= flags <= 0xFF):
        raise LocalProtocolError(f"message type {type} / flags {flags} do not fit in one byte")
    return HEADER.pack(len(payload), stream_id, type, flags) + payload


class FrameReader:
    """Incremental frame parser: feed bytes with `feed`, take frames with `next`."""

    __slots__ = ("_buf", "_discard", "_discarded", "_max", "_pos")

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        if not 0 <= max_message_size <= MAX_STREAM_ID:
            raise ValueError(f"max_message_size must be within 0..{MAX_STREAM_ID}, got {max_message_size}")
        self._max = max_message_size
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data in _buf (compacted lazily)
        self._discard = 0  # body bytes still to drop for an oversized frame
        self._discarded: Oversized | None = None

    @property
    def max_message_size(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a frame (bounded by one header + one max-size body)."""
        return len(self._buf) - self._pos

    @property
    def in_frame(self) -> bool:
        """True if a frame has started but not finished (used to tell a clean EOF from a cut one)."""
        return self.buffered > 0 or self._discarded is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._discard:
            n = min(self._discard, len(data))
            self._discard -= n
            data = data[n:]
            if not data:
                return
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next(self) -> Frame | Oversized | None:
        """The next complete frame, an `Oversized` notice once a too-long body is fully dropped, or None."""
        if self._discarded is not None:
            if self._discard:
                return None
            notice, self._discarded = self._discarded, None
            return notice
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail >= HEADER_SIZE:
            length, stream_id, type_, flags = _unpack_header(buf, pos)
            if length <= self._max:
                end = pos + HEADER_SIZE + length
                if end <= len(buf):
                    self._pos = end
                    return Frame(stream_id, type_, flags, bytes(buf[pos + HEADER_SIZE : end]))
            else:
                # Drop what we already hold of the body, then drop the rest as it arrives.
                have = min(avail - HEADER_SIZE, length)
                self._pos = pos + HEADER_SIZE + have
                self._discard = length - have
                self._discarded = Oversized(stream_id, type_, flags, length)
                self._compact()
                return self.next()
        self._compact()
        return None

    def _compact(self) -> None:
        # Keep the buffer from growing by consumed prefixes; only copies when something was consumed.
        if self._pos:
            if self._pos == len(self._buf):
                self._buf.clear()
            else:
                del self._buf[: self._pos]
            self._pos = 0
