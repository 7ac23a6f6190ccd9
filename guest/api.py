"""The agent API surface the proxy knows: every AgentService and Health RPC, from the descriptors.

For each ``(service, method)`` we know the request message class, the policy endpoint (the request
message's name, as kata-agent names its policy rules) and whether the policy is consulted at all
(never for Health).
Anything not in this table cannot be judged and is answered by the proxy itself, never forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import symbol_database
from google.protobuf.message import Message

from guest.protocols import agent_pb2, health_pb2

__all__ = ["AGENT_SERVICE", "HEALTH_SERVICE", "RPCS", "Rpc", "lookup"]

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"


@dataclass(frozen=True, slots=True)
class Rpc:
    service: str
    method: str
    request_type: type[Message]
    response_type: type[Message]
    checked: bool

    @property
    def endpoint(self) -> str:
        """``data.agent_policy.<endpoint>``: the request message name (ReadStdout -> ReadStreamRequest)."""
        return str(self.request_type.DESCRIPTOR.name)


def _build() -> dict[tuple[str, str], Rpc]:
    db = symbol_database.Default()
    table: dict[tuple[str, str], Rpc] = {}
    for module, service_name, checked in (
        (agent_pb2, "AgentService", True),
        (health_pb2, "Health", False),
    ):
        service = module.DESCRIPTOR.services_by_name[service_name]
        for method in service.methods:
            request_type = db.GetSymbol(method.input_type.full_name)
            response_type = db.GetSymbol(method.output_type.full_name)
            table[(service.full_name, method.name)] = Rpc(
                service.full_name, method.name, request_type, response_type, checked
            )
    return table


RPCS: dict[tuple[str, str], Rpc] = _build()
SERVICES = frozenset(service for service, _ in RPCS)


def lookup(service: str, method: str) -> Rpc | None:
    return RPCS.get((service, method))
