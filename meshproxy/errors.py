"""Typed errors of the mesh proxy.

Every error says what was wrong and what was expected; none ever carries key material.
"""

from __future__ import annotations


class MeshProxyError(Exception):
    """Base class of every error raised by this package."""


class ConfigError(MeshProxyError):
    """A proxy configuration entry (from the CONTRAST_* environment) is malformed."""

    def __init__(self, variable: str, entry: str, reason: str) -> None:
        self.variable = variable
        self.entry = entry
        self.reason = reason
        super().__init__(f"{variable}: entry {entry!r}: {reason}")


class CertificateError(MeshProxyError):
    """The mesh certificates cannot be loaded (missing file, bad PEM, key does not match)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NetfilterError(MeshProxyError):
    """An iptables command failed; carries the argument list, return code and stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip()}")


class BackendError(MeshProxyError):
    """The iptables backend named on the command line or in ``MESHPROXY_IPTABLES`` is not one we drive."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"iptables backend {backend!r}: {reason}")


class RoutingError(MeshProxyError):
    """A routing rule or route for TPROXY marks could not be installed or removed."""


class HandshakeError(MeshProxyError):
    """A TLS handshake did not complete; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"TLS handshake failed: {reason}" + (f" ({detail})" if detail else ""))
