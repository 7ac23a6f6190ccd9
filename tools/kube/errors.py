"""Typed errors of the kubelet-like driver: each names the object, the field or container, and what was
expected."""

from __future__ import annotations

__all__ = ["KubeError", "KubeObjectError", "PodFailedError", "ProbeFailedError"]


class KubeError(Exception):
    """Base of the driver's errors."""


class KubeObjectError(KubeError):
    """A Kubernetes object cannot be run: ``resource`` ``field`` was ``got``, ``expected`` expected."""

    def __init__(self, resource: str, field: str, got: str, expected: str) -> None:
        self.resource, self.field, self.got, self.expected = resource, field, got, expected
        super().__init__(f"{resource}: {field}: {got} (expected {expected})")


class PodFailedError(KubeError):
    """A step of running the pod failed the way kubelet would report it (``phase`` = the CRI call or
    the container's exit), with the runtime's own message in ``detail``."""

    def __init__(self, pod: str, container: str, phase: str, detail: str) -> None:
        self.pod, self.container, self.phase, self.detail = pod, container, phase, detail
        where = f"container {container}" if container else "sandbox"
        super().__init__(f"pod {pod}: {where}: {phase}: {detail}")


class ProbeFailedError(PodFailedError):
    """A startup or liveness probe reached its failure threshold (kubelet would restart the container)."""
