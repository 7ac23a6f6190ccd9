"""ttrpc (the RPC protocol between the Kata runtime and kata-agent) for the guest.

Layout: a sans-IO core that never imports asyncio — `frames` (10-byte header, frame reader),
`messages` (Request/Response envelopes via the generated `ttrpc_pb2`), `connection` (h11-style
`Connection`: receive_data / next_event / send) — and thin asyncio adapters: `server`, `client`, `proxy`
(listener → one upstream connection per downstream connection, with an interceptor per request), over
`transport` (unix, vsock, tcp). This file only re-exports.
"""

from .address import Address, parse_address
from .client import Client
from .connection import (
    NEED_DATA,
    Call,
    Closed,
    Connection,
    Rejected,
    Reply,
    Role,
    unknown_method_status,
    unknown_service_status,
)
from .errors import (
    AddressError,
    ConnectionClosedError,
    LocalProtocolError,
    ProtocolError,
    TtrpcError,
)
from .frames import HEADER_SIZE, MAX_MESSAGE_SIZE, Flags, Frame, FrameReader, MessageType, encode_frame
from .messages import EnvelopeError, Request, Response
from .proxy import Answer, Forward, Interceptor, Proxy
from .server import Handler, Server
from .status import Code, Detail, Status

__all__ = [
    "HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "Address",
    "AddressError",
    "Answer",
    "Call",
    "Client",
    "Closed",
    "Code",
    "Connection",
    "ConnectionClosedError",
    "Detail",
    "EnvelopeError",
    "Flags",
    "Forward",
    "Frame",
    "FrameReader",
    "Handler",
    "Interceptor",
    "LocalProtocolError",
    "MessageType",
    "ProtocolError",
    "Proxy",
    "Rejected",
    "Reply",
    "Request",
    "Response",
    "Role",
    "Server",
    "Status",
    "TtrpcError",
    "encode_frame",
    "parse_address",
    "unknown_method_status",
    "unknown_service_status",
]
