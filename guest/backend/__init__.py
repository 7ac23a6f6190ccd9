"""The agent backend: what kata-agent does for a confidential pod, behind the policy interceptor.

One module per concept: ``sandbox`` (CreateSandbox, namespaces, DNS, GetGuestDetails), ``containers``
(create/start/exec/signal/wait/streams/remove/stats), ``processes`` (subreaper, stdio, exit codes),
``runtime`` (crun), ``spec`` (protobuf Spec → config.json), ``storages`` (ephemeral, pause bundle,
guest pull, erofs+verity layers), ``copyfile``, ``cgroups`` (stats, OOM events), ``network``
(pyroute2), ``service`` (dispatch and the in-process server glue).
"""

from __future__ import annotations

from .errors import AgentError
from .service import AgentBackend, InProcessAgent

__all__ = ["AgentBackend", "AgentError", "InProcessAgent"]
