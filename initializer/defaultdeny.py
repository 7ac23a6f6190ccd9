"""Removal of the pod VM's default-deny firewall rules (used when the service mesh is disabled).

The pod VM installs the default-deny rule for IPv4 and IPv6 (``python -m meshproxy default-deny install``)
before the agent starts; whoever takes over networking removes it. Removal covers both families with the
mesh proxy's own netfilter code, so the two components cannot disagree about the rules. It is idempotent.
"""

from __future__ import annotations

import shutil

from meshproxy import MeshProxyError, Netfilter


class DefaultDenyError(Exception):
    pass


def iptables_binary() -> str | None:
    return shutil.which("iptables-legacy") or shutil.which("iptables")


def remove_default_deny(binary: str | None = None) -> bool:
    """Delete every copy of the rule in every family; True if one was removed, False if none was present."""
    exe = binary or iptables_binary()
    if exe is None:
        raise DefaultDenyError("iptables is not installed; cannot remove the default-deny rule")
    try:
        return Netfilter(exe).remove_default_deny() > 0
    except MeshProxyError as exc:
        raise DefaultDenyError(f"removing the default-deny rule with {exe}: {exc}") from exc
