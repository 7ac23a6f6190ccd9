"""Status codes and the `Status` value carried in every ttrpc Response.

The numbering is google.rpc.Code, which Go's `codes` and ttrpc-rust's `Code` share.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_CODES: dict[int, Code] = {c.value: c for c in Code}


def code_of(value: int) -> Code:
    """The `Code` for a wire value; a code outside google.rpc.Code becomes UNKNOWN (as grpc-go does)."""
    return _CODES.get(value, Code.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Detail:
    """One `google.protobuf.Any` from Status.details, kept opaque."""

    type_url: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Status:
    code: Code
    message: str = ""
    details: tuple[Detail, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name


OK_STATUS = Status(Code.OK)
