"""Removal of the pod VM's default-deny firewall rule (used when the service mesh is disabled).

The pod VM installs ``iptables -I INPUT -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP``
before the agent starts; whoever takes over networking removes it. Removal is idempotent.
"""

from __future__ import annotations

import shutil
import subprocess

RULE = ["INPUT", "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP"]


class DefaultDenyError(Exception):
    pass


def iptables_binary() -> str | None:
    return shutil.which("iptables-legacy") or shutil.which("iptables")


def remove_default_deny(binary: str | None = None) -> bool:
    """Delete every copy of the rule; True if one was removed, False if none was present."""
    exe = binary or iptables_binary()
    if exe is None:
        raise DefaultDenyError("iptables is not installed; cannot remove the default-deny rule")
    removed = False
    for _ in range(16):  # the rule may have been inserted more than once
        try:
            base = [exe, "-w", "-t", "filter"]
            check = subprocess.run([*base, "-C", *RULE], capture_output=True, check=False)
            if check.returncode != 0:
                return removed
            delete = subprocess.run([*base, "-D", *RULE], capture_output=True, check=False)
        except OSError as exc:
            raise DefaultDenyError(f"running {exe}: {exc}") from exc
        if delete.returncode != 0:
            raise DefaultDenyError(f"{exe} -D failed: {delete.stderr.decode(errors='replace').strip()}")
        removed = True
    return removed
