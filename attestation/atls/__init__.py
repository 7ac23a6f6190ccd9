"""Attested TLS (aTLS), wire-compatible with Contrast's internal/atls.

Layout: `wire` (nonce and report-data encodings), `certificate` (the self-signed evidence cert),
`attest` (Issuer/Validator protocols and the peer check), `connection` (sans-IO pyOpenSSL endpoint),
`aio` (asyncio driver), `tunnel` (grpcio terminator/forwarder), `platforms` (SNP/TDX adapters over
the attestation core). Private pyOpenSSL hooks live in `_hooks`.
"""

from attestation.atls.attest import Issuer, Peer, Validator, Verdict, check_peer
from attestation.atls.connection import AtlsConnection, ClientConfig, ServerConfig
from attestation.atls.errors import (
    AtlsError,
    HandshakeError,
    HandshakeTimeoutError,
    HookMissingError,
    NoMatchingValidatorsError,
    NonceError,
    NoValidAttestationExtensionsError,
    PeerCertificateError,
)
from attestation.atls.wire import report_data

__all__ = [
    "AtlsConnection",
    "AtlsError",
    "ClientConfig",
    "HandshakeError",
    "HandshakeTimeoutError",
    "HookMissingError",
    "Issuer",
    "NoMatchingValidatorsError",
    "NoValidAttestationExtensionsError",
    "NonceError",
    "Peer",
    "PeerCertificateError",
    "ServerConfig",
    "Validator",
    "Verdict",
    "check_peer",
    "report_data",
]
