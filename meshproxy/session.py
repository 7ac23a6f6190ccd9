"""A TLS session as a sans-IO state machine over memory BIOs.

Ciphertext goes in with ``receive_ciphertext`` / ``receive_eof``; plaintext comes out of
``read_plaintext`` into a caller-owned buffer; ``send_plaintext`` and ``close`` queue records that
``data_to_send`` hands back as ciphertext. No socket is touched here, which keeps the hot path to a few
C calls per megabyte (one ``recv`` fills the BIO with dozens of records, the read loop drains them into one
large buffer, one ``send`` writes the result) and lets tests drive two sessions against each other.

States: handshaking -> open -> (peer closed and/or we closed). ``read_plaintext`` tells a clean close
(``close_notify``, returns with ``peer_closed``) apart from a truncation (transport EOF without
``close_notify``, raised as ``TruncatedError``) so the adapter can reset the plaintext side instead of
passing a forged end-of-stream to the application.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import cast

from meshproxy.errors import HandshakeError, MeshProxyError


class TruncatedError(MeshProxyError):
    """The transport ended without a TLS close_notify: the stream may have been cut by an attacker."""


class TLSProtocolError(MeshProxyError):
    """The peer sent something that is not valid TLS after the handshake."""


def _reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate_verify_failed"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "eof"
    reason = (exc.reason or exc.__class__.__name__).lower()
    return {
        "peer_did_not_return_a_certificate": "no_client_certificate",
        "tlsv13_alert_certificate_required": "no_client_certificate",
        "wrong_version_number": "not_tls",
        "http_request": "not_tls",
        "unsupported_protocol": "unsupported_protocol",
        "tlsv1_alert_unknown_ca": "unknown_ca",
        "sslv3_alert_bad_certificate": "bad_certificate",
        "no_shared_cipher": "no_shared_cipher",
    }.get(reason, reason)


class TLSSession:
    """One TLS connection endpoint (client or server) without I/O."""

    __slots__ = ("_incoming", "_obj", "_outgoing", "handshake_complete", "peer_closed", "we_closed")

    def __init__(self, context: ssl.SSLContext, server_side: bool) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        # server_hostname=None: no SNI, as in Contrast's mesh.
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self.handshake_complete = False
        self.peer_closed = False
        self.we_closed = False

    # -- input ------------------------------------------------------------------------------------

    def receive_ciphertext(self, data: bytes | bytearray | memoryview) -> None:
        self._incoming.write(data)

    def receive_eof(self) -> None:
        self._incoming.write_eof()

    # -- handshake --------------------------------------------------------------------------------

    def do_handshake(self) -> bool:
        """Advance the handshake; True once it is complete. Raises ``HandshakeError`` with a reason."""
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            if self._incoming.eof:
                raise HandshakeError("eof", "peer closed during handshake") from None
            return False
        except ssl.SSLError as exc:
            raise HandshakeError(_reason(exc), getattr(exc, "verify_message", "") or exc.reason or "") \
                from None
        self.handshake_complete = True
        return True

    def version(self) -> str | None:
        return self._obj.version()

    def peer_certificate_der(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)

    # -- application data -------------------------------------------------------------------------

    def read_plaintext(self, buffer: memoryview) -> int:
        """Decrypt as many buffered records as fit into ``buffer``; returns the byte count.

        Sets ``peer_closed`` on close_notify; raises ``TruncatedError`` if the transport ended without one.
        """
        # With a buffer, SSLObject.read returns a byte count (typeshed only knows the bytes form).
        read = cast(Callable[[int, memoryview], int], self._obj.read)
        pending = self._obj.pending
        incoming = self._incoming
        total = 0
        size = len(buffer)
        while total < size:
            try:
                n = read(size - total, buffer[total:])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                # close_notify after our own: CPython raises instead of returning 0 once both sides closed
                self.peer_closed = True
                break
            except ssl.SSLEOFError:
                raise TruncatedError("transport closed without TLS close_notify") from None
            except ssl.SSLError as exc:
                raise TLSProtocolError(f"TLS error from peer: {exc.reason or type(exc).__name__}") from None
            if n == 0:  # close_notify
                self.peer_closed = True
                break
            total += n
            # Stop before OpenSSL has to raise SSLWantReadError (an exception per event is measurable).
            if not incoming.pending and not incoming.eof and not pending():
                break
        return total

    def send_plaintext(self, data: bytes | bytearray | memoryview) -> None:
        self._obj.write(data)

    def close(self) -> None:
        """Queue our close_notify (TLS 1.3 half-close: the peer may keep sending)."""
        if self.we_closed:
            return
        self.we_closed = True
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # the alert is queued; we do not wait for the peer's
        except ssl.SSLError:
            pass

    # -- output -----------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = self._outgoing
        return out.read() if out.pending else b""

    @property
    def has_data_to_send(self) -> bool:
        return self._outgoing.pending > 0
