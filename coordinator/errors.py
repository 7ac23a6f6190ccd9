"""Typed Coordinator errors; the gRPC layer maps each family to one status code in one place."""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base class."""


class ManifestError(CoordinatorError, ValueError):
    """The manifest is invalid; `path` names the field (e.g. ``ReferenceValues.snp[0].MinimumTCB``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class SeedEngineError(CoordinatorError, ValueError):
    """Bad seed, salt or workload-secret ID."""


class HistoryError(CoordinatorError):
    """The history store is inconsistent or a read failed."""


class NotFoundError(HistoryError):
    pass


class HashMismatchError(HistoryError):
    """A content-addressed value does not hash to its key."""


class LatestChangedError(HistoryError):
    """Compare-and-swap of transitions/latest lost against a concurrent writer."""


class SignatureError(HistoryError):
    """transitions/latest is not signed by the transaction signing key."""


class StateError(CoordinatorError):
    """The Coordinator is in the wrong state for this call (FailedPrecondition)."""


class NoStateError(StateError):
    def __init__(self) -> None:
        super().__init__("coordinator is not initialized: no manifest configured")


class StaleStateError(StateError):
    def __init__(self) -> None:
        super().__init__("coordinator is in recovery mode: recover it with the seed share first")


class AlreadyRecoveredError(StateError):
    def __init__(self) -> None:
        super().__init__("coordinator is already recovered")


class PermissionDeniedError(CoordinatorError):
    """The caller is not authorized (gRPC PermissionDenied)."""


class InvalidRequestError(CoordinatorError, ValueError):
    """Malformed request data (gRPC InvalidArgument)."""
