"""Where a pod's start goes: the CRI calls the kubelet-like driver makes, timed, grouped per pod into the
phases of a confidential pod's start (the benchmark's and the report's numbers).

- ``vm_boot``: RunPodSandbox (QEMU, kernel, verity root, the guest agent answering, the pause container);
- ``node_pull``: kubelet's PullImage calls (containerd pulls onto the node too; the guest never uses it);
- ``image_pull``: the StartContainer calls (containerd creates the task then: the agent's CreateContainer,
  in which the guest pulls each image by digest, checks and unpacks it, and the start);
- ``attestation_certs``: the Initializer from its start to its exit (evidence, aTLS, NewMeshCert, files);
- ``mesh_ready``: from the sidecar's start until every probe passed (the proxy's /ready, the app's
  readiness probe), measured by the demo around ``wait_for_probes``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tools.vm.cri.client import CriClient

INITIALIZER = "contrast-initializer"


@dataclass
class Call:
    method: str
    sandbox: str
    container: str
    start: float
    end: float
    ok: bool


@dataclass
class PodPhases:
    vm_boot: float = 0.0
    node_pull: float = 0.0
    image_pull: float = 0.0
    attestation_certs: float = 0.0
    mesh_ready: float = 0.0
    total: float = 0.0
    pulls: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return (f"VM boot {self.vm_boot:.1f} s, node pull {self.node_pull:.1f} s, "
                f"guest pull+create+start {self.image_pull:.1f} s, "
                f"attestation+certs {self.attestation_certs:.1f} s, mesh+app ready {self.mesh_ready:.1f} s, "
                f"total {self.total:.1f} s")


class TimedCri(CriClient):
    """containerd's CRI with every call recorded (method, pod, container, start, end, success)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[Call] = []
        self._names: dict[str, tuple[str, str]] = {}  # container id -> (sandbox id, name)
        self._uids: dict[str, str] = {}  # pod uid -> sandbox id
        self._lock = threading.Lock()

    def call(self, method: str, request: Any, timeout: float = 300) -> Any:
        t0 = time.monotonic()
        sandbox, container = "", ""
        if method == "CreateContainer":
            sandbox, container = request.pod_sandbox_id, request.config.metadata.name
        elif method == "PullImage":  # kubelet pulls onto the node too (the guest pulls its own)
            sandbox, container = self._uids.get(request.sandbox_config.metadata.uid, ""), request.image.image
        elif method in ("StartContainer", "ContainerStatus", "ExecSync"):
            sandbox, container = self._names.get(request.container_id, ("", ""))
        ok = False
        try:
            reply = super().call(method, request, timeout)
            ok = True
            if method == "RunPodSandbox":
                sandbox = reply.pod_sandbox_id
                with self._lock:
                    self._uids[request.config.metadata.uid] = sandbox
            elif method == "CreateContainer":
                with self._lock:
                    self._names[reply.container_id] = (sandbox, container)
            return reply
        finally:
            with self._lock:
                self.calls.append(Call(method, sandbox, container, t0, time.monotonic(), ok))

    def phases(self, sandbox: str) -> PodPhases:
        with self._lock:
            calls = [c for c in self.calls if c.sandbox == sandbox]
        out = PodPhases()
        for c in calls:
            if c.method == "RunPodSandbox":
                out.vm_boot = c.end - c.start
            elif c.method == "PullImage":
                out.node_pull += c.end - c.start
            elif c.method == "StartContainer":
                # containerd's CRI creates the task (the agent's CreateContainer, in which the guest
                # pulls the image) when the container is started.
                out.image_pull += c.end - c.start
                out.pulls[c.container] = round(c.end - c.start, 2)
        started = [c.end for c in calls if c.method == "StartContainer" and c.container == INITIALIZER]
        after = [c.start for c in calls if c.method == "CreateContainer" and c.container != INITIALIZER
                 and started and c.start > started[0]]
        if started and after:
            out.attestation_certs = min(after) - started[0]
        return out
