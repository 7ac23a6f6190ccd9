"""The Coordinator's Prometheus metrics (names Contrast's e2e tests look at)."""

from __future__ import annotations

from common.metrics import Registry


class CoordinatorMetrics:
    """The metric names Contrast's e2e tests look at."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.handled = self.registry.counter(
            "contrast_grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            ("grpc_code", "grpc_method", "grpc_service", "grpc_type"),
        )
        self.attestation_failures = self.registry.counter(
            "contrast_meshapi_attestation_failures_total", "Number of attestation failures from workloads."
        )
        self.manifest_generation = self.registry.gauge(
            "contrast_coordinator_manifest_generation", "Current manifest generation."
        )
