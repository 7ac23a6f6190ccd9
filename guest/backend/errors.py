"""Typed errors of the agent backend; each carries the ttrpc code kata-agent answers with.

kata-agent renders its errors with ``format!("{:?}", anyhow_error)``: the plain message (no quotes).
The Kata runtime matches a few substrings (``Link not found`` → UpdateInterface is retried,
``ESRCH: No such process`` → SignalProcess errors are ignored), so those texts are kept verbatim.
"""

from __future__ import annotations

from guest.ttrpc import Code, Status

__all__ = [
    "AgentError",
    "ContainerNotFoundError",
    "InvalidRequestError",
    "ProcessNotFoundError",
    "RuntimeFailedError",
    "StorageFailedError",
]


class AgentError(Exception):
    """A request the backend could not carry out; nothing it started is left behind."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def status(self) -> Status:
        return Status(self.code, str(self))


class InvalidRequestError(AgentError):
    """A field of the request is malformed or not allowed (names the field, what was expected)."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"invalid {field} {value!r}: expected {expected}")
        self.field = field


class ContainerNotFoundError(AgentError):
    code = Code.INVALID_ARGUMENT

    def __init__(self, container_id: str) -> None:
        super().__init__(f"Invalid container id {container_id}")
        self.container_id = container_id


class ProcessNotFoundError(AgentError):
    code = Code.NOT_FOUND

    def __init__(self, container_id: str, exec_id: str) -> None:
        super().__init__(f"cannot find process {exec_id or '<init>'} in container {container_id}")


class RuntimeFailedError(AgentError):
    """The OCI runtime refused or failed; the message carries its own log text."""

    def __init__(self, command: str, container_id: str, detail: str) -> None:
        super().__init__(f"{command} {container_id} failed: {detail}")


class StorageFailedError(AgentError):
    def __init__(self, driver: str, mount_point: str, detail: str) -> None:
        super().__init__(f"storage {driver} at {mount_point}: {detail}")
