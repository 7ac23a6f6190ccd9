"""Typed aTLS errors. Messages name what was wrong and what was expected; they never carry keys."""

from __future__ import annotations


class AtlsError(Exception):
    """Base class for every attested-TLS failure."""


class HookMissingError(AtlsError):
    """A private pyOpenSSL/cryptography binding this module depends on has disappeared."""

    def __init__(self, name: str) -> None:
        super().__init__(f"pyOpenSSL/cryptography no longer exposes {name}; aTLS cannot work with it")
        self.name = name


class NonceError(AtlsError):
    """The peer's nonce is missing or malformed (ALPN, SNI or CertificateRequest CA name)."""


class PeerCertificateError(AtlsError):
    """The peer's certificate is missing, unparsable, not self-signed or outside its validity window."""


class NoValidAttestationExtensionsError(AtlsError):
    """The peer certificate carries no attestation extension at all."""

    def __init__(self) -> None:
        super().__init__("no valid attestation document certificate extensions found")


class NoMatchingValidatorsError(AtlsError):
    """No validator accepted any attestation extension; `failures` lists why each one refused."""

    def __init__(self, nonce: bytes, failures: list[str]) -> None:
        detail = "; ".join(failures) if failures else "no validator for the extension OIDs present"
        super().__init__(f"no matching validators found (nonce {nonce.hex()}): {detail}")
        self.failures = failures


class HandshakeError(AtlsError):
    """The TLS handshake failed; `cause` is the aTLS reason when one is known."""


class HandshakeTimeoutError(HandshakeError):
    """The peer did not complete the handshake in time."""
