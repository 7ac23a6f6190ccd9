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


class UntrustedHistoryError(PermissionDeniedError):
    """Recovery refused: the persisted history is not one the recovering party can vouch for.

    `what` names the check that failed, `found` and `expected` the values it compared."""

    def __init__(self, what: str, found: str = "", expected: str = "") -> None:
        detail = what
        if found or expected:
            detail += f" (found {found or '-'}, expected {expected or '-'})"
        super().__init__(f"untrusted history: {detail}")
        self.what = what
        self.found = found
        self.expected = expected


class UnanchoredOwnerError(PermissionDeniedError):
    """A key that the owner anchor in the Coordinator's measured initdata does not list."""

    def __init__(self, what: str, found: str, expected: str) -> None:
        super().__init__(f"{what} (found {found}, expected {expected})")
        self.what = what
        self.found = found
        self.expected = expected


class RollbackError(UntrustedHistoryError):
    """The persisted history does not contain the transition the owner last saw (rolled back or replaced)."""

    def __init__(self, latest: bytes, expected: bytes) -> None:
        super().__init__(
            "rollback: the persisted history does not contain the transition the owner last saw",
            found=f"latest {latest.hex()}",
            expected=f"a history containing {expected.hex()}",
        )
        self.latest = latest
        self.expected_transition = expected


class OwnerAnchorError(CoordinatorError, ValueError):
    """The owner document in the Coordinator's initdata is malformed, or the initdata is not our own."""
