"""Prometheus text exposition (format 0.0.4): a small registry of labelled counters and gauges, and the
renderer every component's ``/metrics`` uses."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

__all__ = ["CONTENT_TYPE", "Labels", "Metric", "Registry", "escape_label", "render_family"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Sequence[tuple[str, str]]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_family(name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> str:
    """``# HELP``/``# TYPE`` and one line per sample; labels keep the given order."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{n}="{escape_label(v)}"' for n, v in labels)
        lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


class Metric:
    def __init__(self, name: str, kind: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help_text, labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        return tuple(labels[name] for name in self.labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def get(self, **labels: str) -> float:
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labels:
            items = [((), 0.0)]
        return render_family(self.name, self.kind, self.help,
                             ((tuple(zip(self.labels, key, strict=True)), v) for key, v in items))


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Metric] = []

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._add(Metric(name, "counter", help_text, labels))

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._add(Metric(name, "gauge", help_text, labels))

    def _add(self, metric: Metric) -> Metric:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        return "".join(m.render() for m in self._metrics)
