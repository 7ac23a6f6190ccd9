"""Typed errors of guest storage setup."""

from __future__ import annotations

__all__ = [
    "DeviceMapperError", "PolicyDeniedError", "StorageError", "StorageOptionError", "StorageSourceError",
]


class StorageError(Exception):
    """A storage could not be set up; nothing it created is left behind."""


class StorageOptionError(StorageError):
    """The request's storage options do not parse (attacker data: refused, nothing touched)."""

    def __init__(self, option: str, value: str, expected: str) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        super().__init__(f"storage option {option}={value!r}: expected {expected}")


class StorageSourceError(StorageError):
    """The storage's ``source`` is not a device the agent will map (attacker data: refused, nothing touched).

    ``source`` is exactly what the request carried; the message shows it escaped (``repr``), so
    spaces, newlines and NULs are visible in logs and cannot forge log lines.
    """

    def __init__(self, source: object, reason: str, expected: str) -> None:
        self.source = source
        self.reason = reason
        self.expected = expected
        super().__init__(f"storage source {source!r}: {reason}; expected {expected}")


class PolicyDeniedError(StorageError):
    """PERMISSION_DENIED: the request's verity parameters differ from the ones the policy pinned.

    ``mismatches`` maps each differing field to (requested, pinned).
    """

    grpc_status = "PERMISSION_DENIED"

    def __init__(self, mismatches: dict[str, tuple[object, object]]) -> None:
        self.mismatches = mismatches
        detail = ", ".join(f"{k}: requested {v[0]!r}, policy {v[1]!r}" for k, v in sorted(mismatches.items()))
        super().__init__(f"verity parameters not allowed by policy ({detail})")


class DeviceMapperError(StorageError):
    """A device-mapper ioctl failed."""

    def __init__(self, op: str, name: str, errno: int, strerror: str) -> None:
        self.op = op
        self.name = name
        self.errno = errno
        super().__init__(f"device-mapper {op} {name!r}: {strerror} (errno {errno})")
