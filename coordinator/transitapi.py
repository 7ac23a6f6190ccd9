"""The transit engine (port 8200): Vault-compatible encrypt/decrypt for workloads, over mTLS.

* TLS: the server certificate is a mesh certificate (current mesh CA) for a key made at startup, with
  the SANs of the coordinator-role policies; client certificates are required and verified against
  the current mesh CA. The context is rebuilt whenever the Coordinator's state changes.
* Authorization: the ``{name}`` path segment must equal the WorkloadSecretID in the client
  certificate's 1.3.9901.3.1 extension (else 403).
* ``PUT|POST /v1/transit/encrypt/{name}`` ``{"plaintext": b64, "key_version": uint32,
  "associated_data": b64?}`` -> ``{"data": {"ciphertext": "vault:vN:..."}}``;
  ``PUT|POST /v1/transit/decrypt/{name}`` ``{"ciphertext": ..., "associated_data": b64?}`` ->
  ``{"data": {"plaintext": b64}}``. Keys derive from the seed (`coordinator.transit`).
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import threading
import urllib.parse
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.http import HttpError, Request, Response, Route
from coordinator import transit
from coordinator.authority import WORKLOAD_SECRET_ID_OID, pem, workload_secret_id_extension
from coordinator.errors import InvalidRequestError, StateError
from coordinator.manifest import ROLE_COORDINATOR
from coordinator.state import Guard, State

ENCRYPT_PREFIX = "/v1/transit/encrypt/"
DECRYPT_PREFIX = "/v1/transit/decrypt/"
MAX_BODY = 1024 * 1024


class TransitApi:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._lock = threading.Lock()
        self._cached: tuple[State, ssl.SSLContext] | None = None

    # -- TLS -------------------------------------------------------------------------------------------
    def _context_for(self, state: State) -> ssl.SSLContext:
        with self._lock:
            if self._cached is not None and self._cached[0] is state:
                return self._cached[1]
            policies = state.manifest.policies.values()
            sans = sorted({s for e in policies if e.role == ROLE_COORDINATOR for s in e.sans})
            leaf = state.authority.issue_mesh_cert(self._key.public_key(), sans or ["coordinator"])
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=state.authority.mesh_ca_pem.decode())
            key_pem = self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _load_chain(ctx, pem(leaf) + state.authority.intermediate_pem, key_pem)
            self._cached = (state, ctx)
            return ctx

    def ssl_context(self) -> ssl.SSLContext:
        """The listener's context; each handshake switches to the context of the current state."""
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = ssl.TLSVersion.TLSv1_2
        # OpenSSL keeps the verify mode of the context the connection started with when the SNI
        # callback swaps contexts (the trust store does follow), so require client certs here too.
        base.verify_mode = ssl.CERT_REQUIRED

        def pick(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> int | None:
            try:
                sslobj.context = self._context_for(self.guard.state())
            except StateError:
                return int(ssl.AlertDescription.ALERT_DESCRIPTION_HANDSHAKE_FAILURE)
            return None

        base.sni_callback = pick
        return base

    # -- HTTP --------------------------------------------------------------------------------------------
    def routes(self) -> dict[str, Route]:
        return {
            ENCRYPT_PREFIX: Route("PUT|POST", self._encrypt, MAX_BODY),
            DECRYPT_PREFIX: Route("PUT|POST", self._decrypt, MAX_BODY),
        }

    def _authorize(self, request: Request, prefix: str) -> tuple[State, str, dict[str, Any]]:
        raw_name = request.path[len(prefix) :]
        if not raw_name or "/" in raw_name:
            raise HttpError(404, f"no transit key at {request.path[:100]}")
        name = urllib.parse.unquote(raw_name)
        if request.peer_cert_der is None:
            raise HttpError(403, "a client certificate is required")
        cert = x509.load_der_x509_certificate(request.peer_cert_der)
        try:
            ext = cert.extensions.get_extension_for_oid(WORKLOAD_SECRET_ID_OID).value
        except x509.ExtensionNotFound as exc:
            raise HttpError(403, "client certificate carries no WorkloadSecretID") from exc
        if not isinstance(ext, x509.UnrecognizedExtension) or ext.value != workload_secret_id_extension(
            name
        ).value.public_bytes():
            raise HttpError(403, f"client certificate's WorkloadSecretID does not match {name!r}")
        ctype = request.headers.get("content-type")
        if ctype is not None and not ctype.startswith("application/json"):
            raise HttpError(400, "Content-Type must be application/json")
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise HttpError(400, "body is not JSON") from exc
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        try:
            state = self.guard.state()
        except StateError as exc:
            raise HttpError(412, str(exc)) from exc
        return state, name, body

    async def _encrypt(self, request: Request) -> Response:
        state, name, body = self._authorize(request, ENCRYPT_PREFIX)
        version = body.get("key_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise HttpError(400, "key_version must be an integer")
        try:
            plaintext = _b64(body.get("plaintext"), "plaintext")
            aad = _b64(body.get("associated_data", ""), "associated_data")
            key = transit.derive_key(state.engine, name, version)
        except InvalidRequestError as exc:
            raise HttpError(400, str(exc)) from exc
        ciphertext = transit.encrypt(key, plaintext, aad, version)
        return Response(200, json.dumps({"data": {"ciphertext": ciphertext}}).encode())

    async def _decrypt(self, request: Request) -> Response:
        state, name, body = self._authorize(request, DECRYPT_PREFIX)
        ciphertext = body.get("ciphertext")
        if not isinstance(ciphertext, str):
            raise HttpError(400, "ciphertext must be a string")
        try:
            aad = _b64(body.get("associated_data", ""), "associated_data")
            version, _blob = transit.parse(ciphertext)
            plaintext = transit.decrypt(transit.derive_key(state.engine, name, version), ciphertext, aad)
        except InvalidRequestError as exc:
            raise HttpError(400, str(exc)) from exc
        encoded = base64.b64encode(plaintext).decode()
        return Response(200, json.dumps({"data": {"plaintext": encoded}}).encode())


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"{field} is not base64") from exc


def _load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    # The stdlib loads certificates and keys only from files; use a private temporary directory.
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cert_path, key_path = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
        for path, data in ((cert_path, chain_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)
