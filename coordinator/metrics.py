"""A small Prometheus registry (text exposition format 0.0.4): counters and gauges with labels."""

from __future__ import annotations

import threading


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metric:
    def __init__(self, name: str, kind: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help_text, labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(labels[name] for name in self.labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        key = tuple(labels[name] for name in self.labels)
        with self._lock:
            self._values[key] = value

    def get(self, **labels: str) -> float:
        key = tuple(labels[name] for name in self.labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labels:
            items = [((), 0.0)]
        for key, value in items:
            label_text = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            suffix = "{" + label_text + "}" if label_text else ""
            number = str(int(value)) if float(value).is_integer() else repr(float(value))
            lines.append(f"{self.name}{suffix} {number}")
        return "\n".join(lines) + "\n"


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Metric] = []

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
        metric = Metric(name, "counter", help_text, labels)
        self._metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
        metric = Metric(name, "gauge", help_text, labels)
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        return "".join(m.render() for m in self._metrics)


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
