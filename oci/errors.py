"""Typed errors of the OCI image code. Each names what was wrong and what was expected."""

from __future__ import annotations

__all__ = [
    "BlobMismatchError",
    "DigestError",
    "ImageFormatError",
    "LayoutError",
    "NoSpaceError",
    "OciError",
    "PlatformError",
    "ReferenceError",
    "RegistryError",
    "TransportPolicyError",
    "UnpackError",
]


class OciError(Exception):
    """Base class: an image, registry or layer input was refused."""


class DigestError(OciError, ValueError):
    """A digest string does not follow ``algorithm:hex`` for a supported algorithm."""

    def __init__(self, value: str, expected: str) -> None:
        super().__init__(f"invalid digest {value!r}: expected {expected}")
        self.value = value
        self.expected = expected


class ReferenceError(OciError, ValueError):
    """An image reference is malformed or lacks the digest it must carry."""

    def __init__(self, reference: str, problem: str) -> None:
        super().__init__(f"image reference {reference!r}: {problem}")
        self.reference = reference
        self.problem = problem


class ImageFormatError(OciError, ValueError):
    """A manifest, index or config document does not have the expected shape."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what}: {problem}")
        self.what = what
        self.problem = problem


class PlatformError(OciError):
    """No manifest of an index matches the wanted platform."""

    def __init__(self, digest: str, wanted: str, available: list[str]) -> None:
        super().__init__(f"image index {digest} has no manifest for {wanted} (available: "
                         f"{', '.join(available) or 'none'})")
        self.digest = digest
        self.wanted = wanted
        self.available = available


class BlobMismatchError(OciError):
    """A blob's bytes do not match the descriptor that names it; nothing of it is used."""

    def __init__(self, digest: str, problem: str) -> None:
        super().__init__(f"blob {digest}: {problem}")
        self.digest = digest
        self.problem = problem


class RegistryError(OciError):
    """The registry refused or failed a request (HTTP status, auth, protocol)."""

    def __init__(self, url: str, problem: str, status: int | None = None) -> None:
        super().__init__(f"registry request {url}: {problem}")
        self.url = url
        self.problem = problem
        self.status = status


class TransportPolicyError(OciError):
    """A plain-HTTP connection was asked for a host that must use TLS."""

    def __init__(self, host: str) -> None:
        super().__init__(f"registry {host}: plain HTTP is allowed only for loopback or hosts given as "
                         "insecure; expected TLS")
        self.host = host


class LayoutError(OciError):
    """A local OCI image layout (oci-layout, index.json, blobs/) is missing or malformed."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"OCI layout {path}: {problem}")
        self.path = path
        self.problem = problem


class UnpackError(OciError):
    """A layer entry was refused while unpacking; what was unpacked so far is discarded."""

    def __init__(self, layer: str, entry: str, problem: str) -> None:
        super().__init__(f"layer {layer}: entry {entry!r}: {problem}")
        self.layer = layer
        self.entry = entry
        self.problem = problem


class NoSpaceError(OciError):
    """The local destination of a pull (the blob cache or the rootfs being unpacked) is full: ENOSPC or
    EDQUOT from the filesystem, not a fault of the image. Whatever was written so far is removed."""

    def __init__(self, where: str, path: str, problem: str) -> None:
        super().__init__(f"{where} {path}: out of space (ENOSPC): {problem}")
        self.where = where
        self.path = path
        self.problem = problem
