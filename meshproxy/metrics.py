"""Counters of the proxy and their Prometheus text rendering (exposition format 0.0.4).

Counters are plain integers on small objects that the data path increments directly; rendering walks them
only when scraped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        stats = list(self.listeners.values())
        family("meshproxy_connections_total", "counter", "Connections accepted per listener.")
        out.extend(f'meshproxy_connections_total{{listener="{s.name}",kind="{s.kind}"}} {s.connections}'
                   for s in stats)
        family("meshproxy_active_sessions", "gauge", "Connections currently open per listener.")
        out.extend(f'meshproxy_active_sessions{{listener="{s.name}",kind="{s.kind}"}} {s.active}'
                   for s in stats)
        family("meshproxy_bytes_total", "counter", "Plaintext bytes relayed per listener and direction.")
        for s in stats:
            out.append(f'meshproxy_bytes_total{{listener="{s.name}",direction="tls_to_plain"}} '
                       f"{s.bytes.tls_to_plain}")
            out.append(f'meshproxy_bytes_total{{listener="{s.name}",direction="plain_to_tls"}} '
                       f"{s.bytes.plain_to_tls}")
        family("meshproxy_handshake_failures_total", "counter", "Failed TLS handshakes by reason.")
        for s in stats:
            out.extend(f'meshproxy_handshake_failures_total{{listener="{s.name}",reason="{_label(r)}"}} {n}'
                       for r, n in sorted(s.handshake_failures.items()))
        family("meshproxy_upstream_failures_total", "counter", "Failed upstream connects by reason.")
        for s in stats:
            out.extend(f'meshproxy_upstream_failures_total{{listener="{s.name}",reason="{_label(r)}"}} {n}'
                       for r, n in sorted(s.upstream_failures.items()))
        family("meshproxy_rejected_connections_total", "counter",
               "Connections closed before relaying (loop guard, limits).")
        for s in stats:
            out.extend(f'meshproxy_rejected_connections_total{{listener="{s.name}",reason="{_label(r)}"}} {n}'
                       for r, n in sorted(s.rejected.items()))
        family("meshproxy_cert_reloads_total", "counter", "Reloads of the mesh credentials by result.")
        out.extend(f'meshproxy_cert_reloads_total{{result="{r}"}} {self.cert_reloads[r]}'
                   for r in ("success", "failure"))
        family("meshproxy_ktls_available", "gauge", "1 if kernel TLS and a library using it exist.")
        out.append(f"meshproxy_ktls_available {int(self.ktls_available)}")
        family("meshproxy_ready", "gauge", "1 once the proxy listens and the default-deny rule is gone.")
        out.append(f"meshproxy_ready {int(self.ready)}")
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
