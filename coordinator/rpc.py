"""The Coordinator's gRPC method table and the generic call helpers, in one import for its own modules.

The table lives with the protos (coordinator.proto) so a client such as the initializer links only the
protos and the aTLS client (attestation.atls), not the Coordinator.
"""

from __future__ import annotations

from attestation.atls import Method, rpc_code
from attestation.atls import unary_call as call
from coordinator import proto
from coordinator.proto import *  # noqa: F403 - re-exported: the method table

__all__ = [*proto.__all__, "Method", "call", "rpc_code"]
