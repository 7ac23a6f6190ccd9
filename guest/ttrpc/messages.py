"""The decoded Request/Response envelopes and their protobuf encoding.

`Request` and `Response` are what handlers, clients and interceptors see. Encoding goes through the
generated `ttrpc_pb2` (upb, in C); decoding never trusts the peer: any protobuf error becomes
`EnvelopeError` carrying the parser's text, which the server sends back as INVALID_ARGUMENT like
ttrpc-rust does.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError, EncodeError

from . import ttrpc_pb2 as pb
from .status import OK_STATUS, Code, Detail, Status, code_of

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Request:
    service: str
    method: str
    payload: bytes
    timeout_nano: int = 0
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    payload: bytes = b""


class EnvelopeError(Exception):
    """Bytes that are not a valid ttrpc envelope; the text is the protobuf parser's."""


def encode_request(request: Request) -> bytes:
    try:
        m = pb.Request(
            service=request.service,
            method=request.method,
            payload=request.payload,
            timeout_nano=request.timeout_nano,
        )
        if request.metadata:
            m.metadata.extend(pb.KeyValue(key=k, value=v) for k, v in request.metadata)
        return m.SerializeToString()
    except (EncodeError, ValueError, TypeError) as e:  # e.g. a lone surrogate, an out-of-range int
        raise EnvelopeError(f"cannot encode request: {e}") from None


def decode_request(data: bytes) -> Request:
    m = pb.Request()
    try:
        m.ParseFromString(data)
    except DecodeError as e:
        raise EnvelopeError(str(e)) from None
    md: Metadata = tuple((kv.key, kv.value) for kv in m.metadata) if m.metadata else ()
    return Request(m.service, m.method, m.payload, m.timeout_nano, md)


def _status_to_pb(status: Status, out: pb.Status) -> None:
    out.SetInParent()  # present even when OK, as ttrpc-rust sends it
    if status.code:
        out.code = int(status.code)
    if status.message:
        out.message = status.message
    for d in status.details:
        a = out.details.add()
        a.type_url = d.type_url
        a.value = d.value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Response with an explicit, empty OK status (field 1, length 0), as ttrpc-rust encodes success.
_OK_PREFIX = b"\x0a\x00"


def encode_response(response: Response) -> bytes:
    status = response.status
    if status.code == 0 and not status.message and not status.details:
        # The common case, encoded by hand: the same bytes protobuf produces (checked by a property test),
        # at a third of the cost.
        payload = response.payload
        if not payload:
            return _OK_PREFIX
        n = len(payload)
        return _OK_PREFIX + (b"\x12" + bytes((n,)) if n < 0x80 else b"\x12" + _varint(n)) + payload
    try:
        m = pb.Response(payload=response.payload)
        _status_to_pb(response.status, m.status)
        return m.SerializeToString()
    except (EncodeError, ValueError, TypeError) as e:
        raise EnvelopeError(f"cannot encode response: {e}") from None


def response_size(response: Response) -> int:
    """Encoded size without building the bytes twice (used for the server's oversize check)."""
    return len(encode_response(response))


def decode_response(data: bytes) -> Response:
    m = pb.Response()
    try:
        m.ParseFromString(data)
    except DecodeError as e:
        raise EnvelopeError(str(e)) from None
    if not m.HasField("status"):
        # Go servers always set it; treat a missing status as OK rather than failing the call.
        return Response(OK_STATUS, m.payload)
    s = m.status
    if s.code == 0 and not s.message and not s.details:
        return Response(OK_STATUS, m.payload)
    details = tuple(Detail(a.type_url, a.value) for a in s.details)
    code = code_of(s.code)
    return Response(Status(code, s.message, details), m.payload)


def error_response(code: Code, message: str) -> Response:
    return Response(Status(code, message))
