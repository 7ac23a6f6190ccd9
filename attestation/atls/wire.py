"""Wire encodings of aTLS nonces and report data (Contrast's internal/atls semantics).

* Client -> server nonce: ALPN entry ``atls:v1:nonce:<lowercase hex>`` offered before ``h2``; a
  server falls back to the SNI host name holding standard base64 of the nonce when no ALPN entry
  carries one.
* Server -> client nonce: the CertificateRequest CA list holds one name, ``CN=base64std(nonce)``.
* Report data: SHA-512(SubjectPublicKeyInfo DER || nonce), 64 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography import x509
from cryptography.x509.oid import NameOID

from attestation.atls.errors import NonceError

NONCE_SIZE = 32
ALPN_PREFIX = b"atls:v1:nonce:"
ALPN_H2 = b"h2"


def alpn_protocols(nonce: bytes) -> list[bytes]:
    """The ALPN list a client offers when it wants the server to attest."""
    _check_size(nonce)
    return [ALPN_PREFIX + nonce.hex().encode("ascii"), ALPN_H2]


def nonce_from_alpn(protocols: list[bytes]) -> bytes | None:
    """The nonce from the first ``atls:`` entry, None when there is none; malformed entries raise."""
    for proto in protocols:
        if not proto.startswith(b"atls:"):
            continue
        if not proto.startswith(ALPN_PREFIX):
            raise NonceError(f"unsupported aTLS ALPN entry {proto[:40]!r}, expected version v1")
        hexpart = proto[len(ALPN_PREFIX) :]
        if len(hexpart) != 2 * NONCE_SIZE or hexpart != hexpart.lower():
            raise NonceError(f"ALPN nonce has {len(hexpart)} characters, expected {2 * NONCE_SIZE} lower hex")
        try:
            return bytes.fromhex(hexpart.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise NonceError("ALPN nonce is not hex") from exc
    return None


def nonce_from_sni(server_name: bytes | None) -> bytes | None:
    """Legacy clients put base64std(nonce) into SNI; None if absent or not a nonce."""
    if not server_name:
        return None
    try:
        nonce = base64.b64decode(server_name, validate=True)
    except (binascii.Error, ValueError):
        return None
    return nonce if len(nonce) == NONCE_SIZE else None


def nonce_ca_name(nonce: bytes) -> x509.Name:
    """The single CertificateRequest CA name carrying the server's nonce."""
    _check_size(nonce)
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, base64.b64encode(nonce).decode("ascii"))])


def nonce_from_ca_names(names: list[x509.Name]) -> bytes:
    """The server's nonce from the first CA name's CN (what Contrast clients read)."""
    if not names:
        raise NonceError("server sent no CA names in its CertificateRequest, expected CN=base64(nonce)")
    cns = names[0].get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise NonceError("first CertificateRequest CA name has no CN, expected CN=base64(nonce)")
    value = cns[0].value
    try:
        nonce = base64.b64decode(value if isinstance(value, str) else value.decode("latin-1"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NonceError("CertificateRequest CA CN is not base64") from exc
    if len(nonce) != NONCE_SIZE:
        raise NonceError(f"CertificateRequest nonce has {len(nonce)} bytes, expected {NONCE_SIZE}")
    return nonce


def report_data(spki_der: bytes, nonce: bytes) -> bytes:
    """REPORT_DATA binding the responder's TLS key to the initiator's nonce."""
    return hashlib.sha512(spki_der + nonce).digest()


def _check_size(nonce: bytes) -> None:
    if len(nonce) != NONCE_SIZE:
        raise NonceError(f"nonce has {len(nonce)} bytes, expected {NONCE_SIZE}")
