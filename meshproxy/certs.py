"""Mesh credentials: TLS contexts built from the files the initializer writes, reloaded when they change.

Files (Contrast's names, in ``/contrast/tls-config`` by default): ``mesh-ca.pem`` (trust anchor for peers),
``certChain.pem`` (our leaf followed by the intermediate), ``key.pem`` (PKCS#8 key). Contexts are immutable
once built; a reload builds a complete new set and swaps it in one assignment, so a connection sees either
the old or the new credentials, never a mix. A failed reload keeps the previous set (and is counted).

Choices, as in Contrast's Envoy config: TLS 1.2 minimum, no SNI, no SAN matching (any mesh-CA-signed peer is
accepted). Session tickets are off so every connection is verified against the current CA.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshproxy.errors import CertificateError

log = logging.getLogger("meshproxy.certs")

DEFAULT_TLS_DIR = Path("/contrast/tls-config")
CA_FILE = "mesh-ca.pem"
CHAIN_FILE = "certChain.pem"
KEY_FILE = "key.pem"


@dataclass(frozen=True, slots=True)
class MeshCredentials:
    """One consistent set of contexts: ingress with/without client auth and egress (client)."""

    server_mtls: ssl.SSLContext
    server_tls: ssl.SSLContext
    client: ssl.SSLContext
    generation: int


def _server_context(ca: Path, chain: Path, key: Path, verify: ssl.VerifyMode) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = verify
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def _client_context(ca: Path, chain: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # mesh identity = signed by the mesh CA (Contrast sets no SAN matcher)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(chain, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def load_credentials(tls_dir: Path, generation: int = 0) -> MeshCredentials:
    ca, chain, key = tls_dir / CA_FILE, tls_dir / CHAIN_FILE, tls_dir / KEY_FILE
    for path in (ca, chain, key):
        if not path.is_file():
            raise CertificateError(str(path), "missing")
    try:
        return MeshCredentials(
            server_mtls=_server_context(ca, chain, key, ssl.CERT_REQUIRED),
            # Like Envoy with requireClientCertificate=false: a presented certificate must still verify.
            server_tls=_server_context(ca, chain, key, ssl.CERT_OPTIONAL),
            client=_client_context(ca, chain, key),
            generation=generation,
        )
    except (ssl.SSLError, OSError):
        path, reason = _diagnose(ca, chain, key)
        raise CertificateError(str(path), reason) from None


def _diagnose(ca: Path, chain: Path, key: Path) -> tuple[Path, str]:
    """Which of the three files OpenSSL refused, and why: OpenSSL's one-word reason for a load that
    fails across the set ("PEM lib") names no file. Reasons only, never file contents."""
    for path in (ca, chain, key):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return path, f"cannot read mesh credentials: {exc.strerror or exc}"
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for path in (ca, chain):
        try:
            probe.load_verify_locations(cafile=path)
        except ssl.SSLError as exc:
            detail = f" ({exc.reason})" if exc.reason else ""
            return path, f"cannot load mesh credentials: no PEM certificate{detail}"
    try:
        probe.load_cert_chain(chain, key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return key, f"cannot load mesh credentials: does not match the first certificate in {chain}"
        detail = f" ({exc.reason})" if exc.reason else ""
        return key, f"cannot load mesh credentials: no PEM private key{detail}"
    return chain.parent, "cannot load mesh credentials: OpenSSL refused them, each file loads on its own"


def _fingerprint(tls_dir: Path) -> tuple[tuple[int, int, int, int], ...] | None:
    result = []
    for name in (CA_FILE, CHAIN_FILE, KEY_FILE):
        try:
            st = os.stat(tls_dir / name)
        except OSError:
            return None
        result.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(result)


class CredentialStore:
    """Holds the current credentials and swaps in new ones when the files change."""

    def __init__(self, tls_dir: Path, on_reload: Callable[[bool], None] | None = None) -> None:
        self.tls_dir = tls_dir
        self._on_reload = on_reload
        self._seen = _fingerprint(tls_dir)
        self.current = load_credentials(tls_dir)

    def check(self) -> bool:
        """Reload if any file changed since the last look; returns True if new credentials are in use."""
        fp = _fingerprint(self.tls_dir)
        if fp is None or fp == self._seen:
            return False
        self._seen = fp
        try:
            fresh = load_credentials(self.tls_dir, self.current.generation + 1)
        except CertificateError as exc:
            # Keep serving with the previous credentials; a later complete write triggers another attempt.
            log.warning("event=cert_reload_failed error=%r", str(exc))
            if self._on_reload:
                self._on_reload(False)
            return False
        self.current = fresh
        log.info("event=cert_reloaded generation=%d", fresh.generation)
        if self._on_reload:
            self._on_reload(True)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()
