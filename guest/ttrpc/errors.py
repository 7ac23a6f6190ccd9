"""Exceptions of the ttrpc package.

`LocalProtocolError` means our caller tried to do something the protocol forbids (send an oversize
message, use an even stream id). Nothing a peer sends raises: every problem ttrpc answers with a status
(oversize frame, undecodable envelope, ...) is a `Rejected` event of the sans-IO core, and EOF is a
`Closed` event, so there is no remote-error exception. `TtrpcError` is the status of one failed call.
"""

from __future__ import annotations

from .status import Code, Status


class TtrpcError(Exception):
    """A call ended with a non-OK status. Handlers raise it; clients receive it."""

    def __init__(self, status: Status | Code, message: str = "") -> None:
        if not isinstance(status, Status):
            status = Status(status, message)
        self.status = status
        super().__init__(str(status))

    @property
    def code(self) -> Code:
        return self.status.code


class ProtocolError(Exception):
    """Base of framing errors; never instantiated directly."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class ConnectionClosedError(TtrpcError):
    """The connection was closed (by us or by the peer) while a call was pending."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(Status(Code.UNAVAILABLE, message))


class AddressError(ValueError):
    """An address string is not unix://, vsock:// or tcp:// in the expected shape."""

    def __init__(self, address: str, expected: str) -> None:
        self.address = address
        self.expected = expected
        super().__init__(f"bad ttrpc address {address!r}: expected {expected}")
