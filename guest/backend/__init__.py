"""The agent backend: what kata-agent does for a confidential pod, behind the policy interceptor.

One module per concept: ``sandbox`` (CreateSandbox, namespaces, DNS, GetGuestDetails), ``containers``
(create/start/exec/signal/wait/streams/remove/stats), ``processes`` (subreaper, stdio, exit codes),
``runtime`` (crun), ``spec`` (protobuf Spec → config.json), ``storages`` (ephemeral, pause bundle,
guest pull, erofs+verity layers), ``copyfile``, ``cgroups`` (stats, OOM events), ``network``
(pyroute2), ``service`` (dispatch), ``inprocess`` (the ttrpc glue and the deferred start).

``AgentBackend`` is imported on first use: the agent listens before the backend's modules are
loaded (``DeferredBackend``), so this package's face must not pull them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import AgentError
from .inprocess import DeferredBackend, InProcessAgent

if TYPE_CHECKING:
    from .service import AgentBackend

__all__ = ["AgentBackend", "AgentError", "DeferredBackend", "InProcessAgent"]


def __getattr__(name: str) -> Any:
    if name == "AgentBackend":
        from .service import AgentBackend

        return AgentBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
