"""gRPC over aTLS, client side (the initializer's and the data-owner CLI's calls to the Coordinator).

grpcio dials a per-call `Forwarder` (Unix socket, this process only) that runs the aTLS client
handshake; if the handshake fails, the aTLS reason is raised instead of grpcio's bare UNAVAILABLE.
grpcio's generated service stubs are not typed, so calls are built from a `Method` table entry with
grpcio's generic ``channel.unary_unary``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]

from attestation.atls.connection import ClientConfig
from attestation.atls.tunnel import Forwarder


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: type[Any]
    response: type[Any]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def unary_call(channel: Any, method: Method, request: Any, timeout: float) -> Any:
    """One unary call on an open channel; raises grpc.RpcError on failure."""
    stub = channel.unary_unary(
        method.path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=method.response.FromString,
    )
    return stub(request, timeout=timeout)


def rpc_code(error: Exception) -> Any:
    """The grpc.StatusCode of an RpcError (None for anything else)."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code()
    return None


MAX_RESPONSE = 64 * 1024 * 1024


class CallError(Exception):
    """A call to the Coordinator failed; `code` is the gRPC status code name ("UNAVAILABLE", ...).

    `unreachable` is true when nothing answered (connection refused or reset, gRPC UNAVAILABLE without
    an aTLS verdict): a later attempt may succeed. A failed attestation is never `unreachable`."""

    def __init__(self, method: str, code: str, message: str, unreachable: bool = False) -> None:
        super().__init__(f"{method}: {code}: {message}")
        self.method, self.code, self.message = method, code, message
        self.unreachable = unreachable


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and not host.endswith(":"):
        return host.strip("[]"), int(port)
    return address, default_port


@contextlib.contextmanager
def channel(host: str, port: int, config: ClientConfig) -> Iterator[tuple[Any, Forwarder]]:
    forwarder = Forwarder(host, port, config)
    ch = grpc.insecure_channel(
        forwarder.target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", MAX_RESPONSE),
            ("grpc.max_send_message_length", MAX_RESPONSE),
        ],
    )
    try:
        yield ch, forwarder
    finally:
        ch.close()
        forwarder.close()


def call(
    host: str, port: int, config: ClientConfig, method: Method, request: Any, timeout: float = 30
) -> Any:
    with channel(host, port, config) as (ch, forwarder):
        try:
            return unary_call(ch, method, request, timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            dial_error = forwarder.last_error
            if isinstance(dial_error, OSError):
                raise CallError(method.name, "UNAVAILABLE", f"connecting to {host}:{port}: {dial_error}",
                                unreachable=True) from exc
            if dial_error is not None:
                raise CallError(method.name, "UNAVAILABLE", f"aTLS: {dial_error}") from exc
            name = code.name if code else "UNKNOWN"
            unreachable = name == "UNAVAILABLE"
            raise CallError(method.name, name, exc.details() or "", unreachable=unreachable) from exc
