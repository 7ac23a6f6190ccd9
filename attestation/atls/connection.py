"""Sans-IO aTLS endpoint: a pyOpenSSL connection over memory BIOs plus the aTLS callbacks.

Nothing here touches a socket (the trio `_ssl.py` model): bytes from the network go in through
`receive_data`, bytes for the network come out of `data_to_send`, and `advance_handshake`,
`read`/`write` move the TLS state machine. The adapters in `aio.py` and `tunnel.py` only move bytes.

Server side (per connection, as Contrast builds a config per handshake): a placeholder P-256
certificate is loaded so TLS 1.2 picks an ECDSA suite; the ALPN select callback reads the client's
nonce (ALPN ``atls:v1:nonce:<hex>``, else SNI base64) and swaps in a fresh key and evidence
certificate; the CertificateRequest CA list carries CN=base64(server nonce); the verify callback
checks the client's evidence when validators are configured (then a client cert is required).

Client side: ALPN offers the nonce then ``h2``; OpenSSL's cert callback (see `_hooks`) reads the
server nonce from the CA list mid-handshake and builds the client certificate, with evidence when an
issuer is configured; the verify callback checks the server's evidence unless validators is None
(the Initializer does not check the Coordinator).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

from attestation.atls import _hooks as hooks
from attestation.atls import attest, certificate, wire
from attestation.atls.errors import AtlsError, HandshakeError, NonceError, PeerCertificateError

_BIO_CHUNK = 65536


@dataclass(frozen=True)
class ServerConfig:
    """`validators=None`: a client certificate is requested but not required or checked (UserAPI)."""

    issuer: attest.Issuer | None
    validators: Sequence[attest.Validator] | None = None
    tls13_only: bool = False


@dataclass(frozen=True)
class ClientConfig:
    """`validators=None`: the server is not checked (the Initializer); `key`: the client TLS key."""

    issuer: attest.Issuer | None = None
    validators: Sequence[attest.Validator] | None = None
    key: certificate.SigningKey | None = None
    tls13_only: bool = False


@dataclass
class _State:
    own_nonce: bytes
    error: AtlsError | None = None
    verdict: attest.Verdict | None = None
    checked: dict[bytes, attest.Verdict | None] = field(default_factory=dict)
    keepalive: list[Any] = field(default_factory=list)


@functools.cache
def _placeholder() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return certificate.build(key, []), key


def _context(tls13_only: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION if tls13_only else SSL.TLS1_2_VERSION)
    # No session tickets (every connection must attest afresh) and no renegotiation (the verified
    # peer identity must not change after the handshake the terminator recorded).
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
    return ctx


def _check(state: _State, cert: x509.Certificate, validators: Sequence[attest.Validator] | None) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    if der in state.checked:
        return
    if validators is None:
        state.checked[der] = None
        return
    try:
        state.verdict = attest.check_peer(cert, state.own_nonce, list(validators))
    except AtlsError as exc:
        state.error = exc
        raise
    state.checked[der] = state.verdict


class AtlsConnection:
    """One aTLS endpoint (server or client) driven by bytes in, bytes out."""

    def __init__(self, conn: SSL.Connection, state: _State, server: bool) -> None:
        self._conn = conn
        self._state = state
        self.is_server = server
        self.handshake_done = False

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def server(cls, config: ServerConfig) -> AtlsConnection:
        hooks.require()
        state = _State(own_nonce=os.urandom(wire.NONCE_SIZE))
        ctx = _context(config.tls13_only)
        cert, key = _placeholder()
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        hooks.set_client_ca_names(ctx, [wire.nonce_ca_name(state.own_nonce).public_bytes()])
        mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
        if config.validators is not None:
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        validators = config.validators

        def verify(_c: SSL.Connection, cert_obj: crypto.X509, _err: int, depth: int, _ok: int) -> bool:
            if depth == 0:
                _check(state, cert_obj.to_cryptography(), validators)
            return True

        ctx.set_verify(mode, verify)
        issuer = config.issuer

        def select(conn: SSL.Connection, offered: list[bytes]) -> bytes:
            try:
                nonce = wire.nonce_from_alpn(offered)
                if nonce is None:
                    name = conn.get_servername()
                    nonce = wire.nonce_from_sni(name)
                if issuer is not None:
                    if nonce is None:
                        raise NonceError("client offered no nonce (ALPN atls:v1:nonce:<hex> or SNI base64)")
                    fresh = ec.generate_private_key(ec.SECP256R1())
                    spki = certificate.key_spki_der(fresh)
                    evidence = issuer.issue(wire.report_data(spki, nonce))
                    conn.use_certificate(certificate.build(fresh, [(issuer.oid, evidence)]))
                    conn.use_privatekey(fresh)
            except AtlsError as exc:
                state.error = exc
                raise
            return wire.ALPN_H2 if wire.ALPN_H2 in offered else SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]

        ctx.set_alpn_select_callback(select)
        conn = SSL.Connection(ctx, None)
        conn.set_accept_state()
        return cls(conn, state, server=True)

    @classmethod
    def client(cls, config: ClientConfig, server_name: str | None = None) -> AtlsConnection:
        hooks.require()
        state = _State(own_nonce=os.urandom(wire.NONCE_SIZE))
        ctx = _context(config.tls13_only)
        ctx.set_alpn_protos(wire.alpn_protocols(state.own_nonce))
        validators = config.validators

        def verify(_c: SSL.Connection, cert_obj: crypto.X509, _err: int, depth: int, _ok: int) -> bool:
            if depth == 0:
                _check(state, cert_obj.to_cryptography(), validators)
            return True

        ctx.set_verify(SSL.VERIFY_PEER, verify)
        issuer = config.issuer
        key = config.key

        def choose_certificate(conn: SSL.Connection) -> bool:
            try:
                own = key if key is not None else ec.generate_private_key(ec.SECP256R1())
                evidence: list[tuple[x509.ObjectIdentifier, bytes]] = []
                if issuer is not None:
                    nonce = wire.nonce_from_ca_names(conn.get_client_ca_list(as_cryptography=True))
                    spki = certificate.key_spki_der(own)
                    evidence.append((issuer.oid, issuer.issue(wire.report_data(spki, nonce))))
                conn.use_certificate(certificate.build(own, evidence))
                conn.use_privatekey(own)
            except AtlsError as exc:
                state.error = exc
                return False
            return True

        state.keepalive.append(hooks.set_cert_callback(ctx, choose_certificate))
        conn = SSL.Connection(ctx, None)
        if server_name:
            conn.set_tlsext_host_name(server_name.encode("idna"))
        conn.set_connect_state()
        return cls(conn, state, server=False)

    # -- byte plumbing -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the network; b"" means the transport reached EOF."""
        if data:
            self._conn.bio_write(data)
        else:
            self._conn.bio_shutdown()

    def data_to_send(self) -> bytes:
        out = bytearray()
        while True:
            try:
                chunk = self._conn.bio_read(_BIO_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def advance_handshake(self) -> bool:
        """Run the handshake as far as the buffered bytes allow; True once it is complete."""
        if self.handshake_done:
            return True
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return False
        except AtlsError:
            raise
        except SSL.Error as exc:
            if self._state.error is not None:
                raise self._state.error from exc
            raise HandshakeError(f"TLS handshake failed: {_reason(exc)}") from exc
        if self._state.error is not None:
            raise self._state.error
        self.handshake_done = True
        return True

    def read(self) -> bytes | None:
        """Decrypted application bytes; None when more network bytes are needed; b"" on close."""
        out = bytearray()
        while True:
            try:
                chunk = self._conn.recv(_BIO_CHUNK)
            except SSL.WantReadError:
                return bytes(out) if out else None
            except SSL.ZeroReturnError:
                return bytes(out)
            except SSL.SysCallError as exc:
                if out:
                    return bytes(out)
                raise HandshakeError("peer closed the connection without close_notify") from exc
            except SSL.Error as exc:
                raise HandshakeError(f"TLS record error: {_reason(exc)}") from exc
            if not chunk:
                return bytes(out)
            out += chunk

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self._conn.send(view[:16384].tobytes())
            view = view[sent:]

    def close(self) -> None:
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()

    # -- results -------------------------------------------------------------------------------------
    @property
    def own_nonce(self) -> bytes:
        return self._state.own_nonce

    @property
    def version(self) -> str:
        return self._conn.get_protocol_version_name()

    @property
    def peer(self) -> attest.Peer | None:
        """The verified peer (None before the handshake or when it sent no certificate)."""
        if not self.handshake_done:
            return None
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return None
        return attest.Peer(
            certificate=cert,
            spki_der=certificate.spki_der(cert),
            verdict=self._state.verdict,
            alpn=self._conn.get_alpn_proto_negotiated() or None,
        )


def _reason(exc: SSL.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) >= 3:
            parts.append(str(item[2]))
    return ", ".join(parts) or str(exc) or type(exc).__name__


__all__ = ["AtlsConnection", "ClientConfig", "PeerCertificateError", "ServerConfig"]
