"""A kubelet-like driver for tests and the demo: Kubernetes YAML → pods run through a CRI runtime
(containerd's CRI plugin) the way kubelet runs them, without an API server."""

from .errors import KubeError, KubeObjectError, PodFailedError, ProbeFailedError
from .kubelet import Kubelet, ProbeResult, RunningPod
from .objects import PodPlan, load_objects, pod_templates
from .volumes import make_rshared, undo_rshared

__all__ = [
    "KubeError",
    "KubeObjectError",
    "Kubelet",
    "PodFailedError",
    "PodPlan",
    "ProbeFailedError",
    "ProbeResult",
    "RunningPod",
    "load_objects",
    "make_rshared",
    "pod_templates",
    "undo_rshared",
]
