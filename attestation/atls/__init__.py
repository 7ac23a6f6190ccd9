"""Attested TLS (aTLS), wire-compatible with Contrast's internal/atls.

Layout: `wire` (nonce and report-data encodings), `certificate` (the self-signed evidence cert),
`attest` (Issuer/Validator protocols and the peer check), `connection` (sans-IO pyOpenSSL endpoint),
`aio` (asyncio driver), `tunnel` (grpcio terminator/forwarder), `client` (gRPC calls over aTLS),
`platforms` and `tdx` (SNP/TDX issuers and validators over the attestation core). Private pyOpenSSL
hooks live in `_hooks`. Other packages import only the names in `__all__`.
"""

from attestation.atls.attest import Issuer, Peer, Validator, Verdict, check_peer
from attestation.atls.client import CallError, Method, call, channel, rpc_code, split_host_port, unary_call
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
from attestation.atls.platforms import (
    SNP_OID,
    TDX_OID,
    EvidenceFormatError,
    EvidenceRejectedError,
    SnpIssuer,
    SnpValidator,
    decode_snp,
    issuer_for,
)
from attestation.atls.tdx import TdxIssuer, TdxValidator, decode_tdx
from attestation.atls.tunnel import Forwarder, PeerRegistry, Terminator, UnknownPeerError
from attestation.atls.wire import report_data

__all__ = [
    "SNP_OID",
    "TDX_OID",
    "AtlsConnection",
    "AtlsError",
    "CallError",
    "ClientConfig",
    "EvidenceFormatError",
    "EvidenceRejectedError",
    "Forwarder",
    "HandshakeError",
    "HandshakeTimeoutError",
    "HookMissingError",
    "Issuer",
    "Method",
    "NoMatchingValidatorsError",
    "NoValidAttestationExtensionsError",
    "NonceError",
    "Peer",
    "PeerCertificateError",
    "PeerRegistry",
    "ServerConfig",
    "SnpIssuer",
    "SnpValidator",
    "TdxIssuer",
    "TdxValidator",
    "Terminator",
    "UnknownPeerError",
    "Validator",
    "Verdict",
    "(",
    "call",
    "channel",
    "check_peer",
    "decode_snp",
    "decode_tdx",
    "issuer_for",
    "report_data",
    "rpc_code",
    "split_host_port",
    "unary_call",
]
