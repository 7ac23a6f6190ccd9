"""Typed errors of the shim, each mapped onto the ttrpc status containerd turns into errdefs."""

from __future__ import annotations

from guest.ttrpc import Code, Status, TtrpcError

__all__ = [
    "AlreadyExistsError",
    "ConfigError",
    "FailedPreconditionError",
    "InvalidInputError",
    "NotFoundError",
    "ShimError",
]


class ShimError(TtrpcError):
    """An error answered to containerd with ``code`` and a message naming what was wrong."""

    code = Code.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(Status(self.code, message))
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(ShimError):
    """A value containerd (or its client) passed is malformed: ``what`` was ``got``, expected ``expected``."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, what: str, got: object, expected: str) -> None:
        super().__init__(f"invalid {what} {got!r}: expected {expected}")
        self.what, self.got, self.expected = what, got, expected


class ConfigError(ShimError):
    """The runtime configuration (TOML) or the pod's initdata cannot be used."""

    code = Code.FAILED_PRECONDITION


class NotFoundError(ShimError):
    code = Code.NOT_FOUND


class AlreadyExistsError(ShimError):
    code = Code.ALREADY_EXISTS


class FailedPreconditionError(ShimError):
    code = Code.FAILED_PRECONDITION
