"""Errors of the policy layer. Each maps to exactly one ttrpc status (see guest.agent.decisions)."""

from __future__ import annotations

__all__ = [
    "InvalidPolicyError",
    "PatchError",
    "PolicyDeniedError",
    "PolicyError",
    "PolicyInputError",
    "PolicyInternalError",
]


class PolicyError(Exception):
    """Base class for everything the policy layer raises."""


class PolicyDeniedError(PolicyError):
    """The policy said no. ``prints`` is the policy's print output joined with spaces (kata's text)."""

    def __init__(self, endpoint: str, prints: str, print_lines: tuple[str, ...] = ()) -> None:
        self.endpoint = endpoint
        self.prints = prints
        self.print_lines = print_lines
        super().__init__(f"{endpoint} is blocked by policy: {prints}")


class PolicyInternalError(PolicyError):
    """The policy machinery failed (undefined/multiple results, bad result type, engine or patch error).

    kata-agent answers these with INTERNAL and the text ``<endpoint>: internal error <detail>``.
    """

    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        self.detail = detail
        super().__init__(f"{endpoint}: internal error {detail}")


class InvalidPolicyError(PolicyError):
    """A policy text that does not load (SetPolicy answers INVALID_ARGUMENT)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"failed to load policy: {detail}")


class PatchError(PolicyError):
    """A JSON Patch (RFC 6902) operation that cannot be applied; the document is left unchanged."""

    def __init__(self, index: int, path: str, reason: str = "path is invalid") -> None:
        self.index = index
        self.path = path
        self.reason = reason
        # json-patch crate's Display text, which kata-agent puts into the INTERNAL reply.
        super().__init__(f"operation '/{index}' failed at path '{path}': {reason}")


class PolicyInputError(PolicyError):
    """JSON that cannot be turned into the request message (tools and tests only)."""

    def __init__(self, path: str, expected: str, got: object) -> None:
        self.path = path
        self.expected = expected
        self.got = got
        super().__init__(f"{path or '<root>'}: expected {expected}, got {type(got).__name__} {got!r:.80}")
