"""Sans-IO framing for many byte streams over one virtio-serial port.

The host bridge (tools/vm/hvsock.py) speaks Kata's hybrid-vsock handshake on its unix socket and
maps each accepted connection to a stream on the port; the in-guest relay (``relay``) connects
each stream to the requested AF_VSOCK port on the loopback transport (CID 1).

Frame: ``type u8 | stream u32 | length u32 | payload`` (big-endian), payload ≤ ``MAX_PAYLOAD``.
Types: OPEN (host→guest, payload = port u32), OPENED / REFUSED (guest→host), DATA, CLOSE.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = ["MAX_PAYLOAD", "Frame", "FrameDecoder", "FrameError", "Kind", "encode"]

MAX_PAYLOAD = 64 * 1024
_HEADER = struct.Struct(">BII")


class Kind(enum.IntEnum):
    OPEN = 1
    OPENED = 2
    REFUSED = 3
    DATA = 4
    CLOSE = 5


class FrameError(Exception):
    """The peer sent a frame that is not valid; the channel cannot be resynchronised."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    stream: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        if not 0 <= self.stream < 2**32:
            raise FrameError(f"stream id {self.stream} out of range")


def encode(frame: Frame) -> bytes:
    return _HEADER.pack(frame.kind, frame.stream, len(frame.payload)) + frame.payload


class FrameDecoder:
    """Feed bytes with ``receive_data``; take whole frames from ``frames``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= _HEADER.size:
            kind, stream, length = _HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame length {length} exceeds {MAX_PAYLOAD}")
            try:
                k = Kind(kind)
            except ValueError:
                raise FrameError(f"unknown frame type {kind}") from None
            end = _HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(Frame(k, stream, bytes(self._buf[_HEADER.size:end])))
            del self._buf[:end]
        return out
