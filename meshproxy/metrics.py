"""Counters of the proxy and their Prometheus text rendering (exposition format 0.0.4).

Counters are plain integers on small objects that the data path increments directly; rendering walks them
only when scraped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from common.metrics import Labels, render_family
from meshproxy.relay import DirectionStats


@dataclass
class ListenerStats:
    """Per-listener counters; ``name`` is Envoy's listener name (``ingress``, ``ingressWithoutClientAuth``,
    or the egress entry's name)."""

    name: str
    kind: str  # "ingress" | "egress"
    connections: int = 0
    active: int = 0
    handshake_failures: Counter[str] = field(default_factory=Counter)
    upstream_failures: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    bytes: DirectionStats = field(default_factory=DirectionStats)


@dataclass
class Metrics:
    listeners: dict[str, ListenerStats] = field(default_factory=dict)
    cert_reloads: Counter[str] = field(default_factory=Counter)
    ready: bool = False
    ktls_available: bool = False

    def listener(self, name: str, kind: str) -> ListenerStats:
        stats = self.listeners.get(name)
        if stats is None:
            stats = self.listeners[name] = ListenerStats(name, kind)
        return stats

    def cert_reloaded(self, ok: bool) -> None:
        self.cert_reloads["success" if ok else "failure"] += 1

    def render(self) -> str:
        stats = list(self.listeners.values())

        def per_listener(value: Callable[[ListenerStats], int]) -> list[tuple[Labels, float]]:
            return [((("listener", s.name), ("kind", s.kind)), value(s)) for s in stats]

        def by_reason(attr: str) -> list[tuple[Labels, float]]:
            return [((("listener", s.name), ("reason", r)), n)
                    for s in stats for r, n in sorted(getattr(s, attr).items())]

        directions = [((("listener", s.name), ("direction", d)), getattr(s.bytes, d))
                      for s in stats for d in ("tls_to_plain", "plain_to_tls")]
        reloads: list[tuple[Labels, float]] = [
            ((("result", r),), self.cert_reloads[r]) for r in ("success", "failure")]
        families = (
            ("meshproxy_connections_total", "counter", "Connections accepted per listener.",
             per_listener(lambda s: s.connections)),
            ("meshproxy_active_sessions", "gauge", "Connections currently open per listener.",
             per_listener(lambda s: s.active)),
            ("meshproxy_bytes_total", "counter", "Plaintext bytes relayed per listener and direction.",
             directions),
            ("meshproxy_handshake_failures_total", "counter", "Failed TLS handshakes by reason.",
             by_reason("handshake_failures")),
            ("meshproxy_upstream_failures_total", "counter", "Failed upstream connects by reason.",
             by_reason("upstream_failures")),
            ("meshproxy_rejected_connections_total", "counter",
             "Connections closed before relaying (loop guard, limits).", by_reason("rejected")),
            ("meshproxy_cert_reloads_total", "counter", "Reloads of the mesh credentials by result.",
             reloads),
            ("meshproxy_ktls_available", "gauge", "1 if kernel TLS and a library using it exist.",
             [((), int(self.ktls_available))]),
            ("meshproxy_ready", "gauge", "1 once the proxy listens and the default-deny rule is gone.",
             [((), int(self.ready))]),
        )
        return "".join(render_family(*f) for f in families)
