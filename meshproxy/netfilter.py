"""Apply the rules from ``rules.py`` for both address families: atomic per family, idempotent, removable.

Every rule goes into IPv4 (``iptables``) and IPv6 (``ip6tables``) netfilter of the same backend. A pod always
has an IPv6 link-local address when its kernel has IPv6, so IPv4 rules alone would leave the application
reachable in plaintext over IPv6. IPv6 is left out only when the kernel has no IPv6 at all
(``socket(AF_INET6)`` fails with EAFNOSUPPORT): then there is no IPv6 path to protect. A per-interface
``disable_ipv6`` sysctl does not count, because anyone with CAP_NET_ADMIN can switch it back.

Why ip6tables and not one nftables ``inet`` table: the pod image installs the default-deny rule with an
iptables front end before the sidecar runs (Contrast's unit uses ``iptables-legacy``), and the sidecar must
remove exactly that rule with the same back end. Each iptables back end has an IPv6 twin (``iptables-legacy``
→ ``ip6tables-legacy``, ``iptables-nft`` → ``ip6tables-nft``), so both families use the same back end and
the same rule shape, and the back end choice keeps its meaning. The price is one transaction per family
instead of one for both. The lifecycle makes that safe: the deny rule of both families stays until the
chains of both are in, and any failure puts the deny rule back in both.

Per family, the ingress chains are written in one ``iptables-restore --noflush`` transaction: declaring our
chains creates or empties them, so running the install twice leaves exactly one copy and a failure leaves
the table as it was. The single rule outside our chains (the PREROUTING jump) is added only if absent.

The backend defaults to ``iptables-legacy`` when it exists, because the pod image installs the default-deny
rule with it; ``MESHPROXY_IPTABLES`` or ``--iptables`` choose another (``iptables``, ``iptables-nft``, or a
path to one of them).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Callable

from meshproxy.errors import BackendError, MeshProxyError, NetfilterError
from meshproxy.rules import FAMILIES, MANGLE, Family, IngressRules, Rule, default_deny

log = logging.getLogger("meshproxy.netfilter")

_TIMEOUT = 30.0
#: The IPv4 front ends we drive; each has an IPv6 twin named with ``ip6tables``.
BACKENDS = ("iptables", "iptables-legacy", "iptables-nft")


def default_backend() -> str:
    chosen = os.environ.get("MESHPROXY_IPTABLES")
    if chosen:
        return chosen
    return "iptables-legacy" if shutil.which("iptables-legacy") else "iptables"


def ipv6_in_kernel() -> bool:
    """False only when this kernel has no IPv6 at all (built without it, or ``ipv6.disable=1``)."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return False
        raise
    return True


def family_binary(iptables: str, family: Family) -> str:
    """The front end of ``family`` for the backend ``iptables`` (a name from BACKENDS or a path to one)."""
    directory, name = os.path.split(iptables)
    if name not in BACKENDS:
        raise BackendError(iptables, f"want one of {', '.join(BACKENDS)} (or a path to one)")
    return os.path.join(directory, family.value + name.removeprefix("iptables"))


def _exec(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetfilterError(argv, -1, str(exc)) from None


class FamilyTables:
    """One family's front end of the backend (``iptables-legacy`` or ``ip6tables-legacy``, ...)."""

    def __init__(self, binary: str, family: Family) -> None:
        self.binary = binary
        self.family = family

    def _run(self, args: list[str]) -> int:
        argv = [self.binary, "-w", *args]
        proc = _exec(argv)
        if proc.returncode == 0:
            return 0
        # "rule/chain not found" is an answer (1 or 2 depending on backend and case); anything else fails
        if proc.returncode in (1, 2) and _is_not_found(proc.stderr):
            return 1
        raise NetfilterError(argv, proc.returncode, proc.stderr)

    def _must(self, args: list[str]) -> None:
        argv = [self.binary, "-w", *args]
        proc = _exec(argv)
        if proc.returncode != 0:
            raise NetfilterError(argv, proc.returncode, proc.stderr)

    def has_rule(self, rule: Rule) -> bool:
        return self._run(["-t", rule.table, "-C", rule.chain, *rule.spec]) == 0

    def _save(self, table: str) -> list[str]:
        # iptables-save is the one listing both backends print reliably (iptables-nft 1.8.9 -S can call an
        # unreferenced user chain "incompatible").
        argv = [self.binary + "-save", "-t", table]
        proc = _exec(argv)
        if proc.returncode != 0:
            raise NetfilterError(argv, proc.returncode, proc.stderr)
        return proc.stdout.splitlines()

    def has_chain(self, table: str, chain: str) -> bool:
        return any(line.startswith(f":{chain} ") for line in self._save(table))

    def list_rules(self, table: str, chain: str) -> list[str]:
        return [line for line in self._save(table) if line.startswith(f"-A {chain} ")]

    def install_default_deny(self) -> None:
        rule = default_deny(self.family)
        if not self.has_rule(rule):
            self._must(["-t", rule.table, "-I", rule.chain, "1", *rule.spec])
            log.info("event=default_deny_installed backend=%s", self.binary)

    def remove_default_deny(self) -> int:
        rule = default_deny(self.family)
        removed = 0
        while self.has_rule(rule):
            self._must(["-t", rule.table, "-D", rule.chain, *rule.spec])
            removed += 1
        log.info("event=default_deny_removed backend=%s copies=%d", self.binary, removed)
        return removed

    def install_ingress(self, rules: IngressRules) -> None:
        lines = [f"*{MANGLE}"]
        lines.extend(f":{chain} - [0:0]" for chain in rules.chains)
        for chain_rules in rules.chains.values():
            lines.extend(f"-A {r.chain} {' '.join(r.spec)}" for r in chain_rules)
        lines.append("COMMIT")
        argv = [self.binary + "-restore", "-w", "--noflush"]
        proc = _exec(argv, "\n".join(lines) + "\n")
        if proc.returncode != 0:
            raise NetfilterError(argv, proc.returncode, proc.stderr)
        for hook in rules.hooks:
            if not self.has_rule(hook):
                self._must(["-t", hook.table, "-A", hook.chain, *hook.spec])
        log.info(
            "event=ingress_rules_installed backend=%s rules=%d",
            self.binary,
            sum(len(r) for r in rules.chains.values()) + len(rules.hooks),
        )

    def remove_ingress(self, rules: IngressRules) -> None:
        for hook in rules.hooks:
            while self.has_rule(hook):
                self._must(["-t", hook.table, "-D", hook.chain, *hook.spec])
        present = [c for c in rules.chains if self.has_chain(MANGLE, c)]
        for chain in present:  # flush all first: one chain jumps to the other
            self._must(["-t", MANGLE, "-F", chain])
        for chain in present:
            self._must(["-t", MANGLE, "-X", chain])
        log.info("event=ingress_rules_removed backend=%s", self.binary)


class Netfilter:
    """Runs one iptables backend for every address family of the kernel; each method is safe to repeat."""

    def __init__(self, iptables: str | None = None) -> None:
        self.iptables = iptables or default_backend()
        families = FAMILIES if ipv6_in_kernel() else (Family.IPV4,)
        if Family.IPV6 not in families:
            log.warning("event=ipv6_absent reason=EAFNOSUPPORT rules=ipv4_only")
        self.tables = {f: FamilyTables(family_binary(self.iptables, f), f) for f in families}

    def family(self, family: Family) -> FamilyTables:
        return self.tables[family]

    def _every(self, action: Callable[[FamilyTables], object]) -> None:
        # Apply to every family even when one fails, then report the first failure: a rule that can go
        # in (deny) or out (our chains) in one family must not wait for the other.
        first: MeshProxyError | None = None
        for tables in self.tables.values():
            try:
                action(tables)
            except MeshProxyError as exc:
                log.error("event=netfilter_failed backend=%s error=%r", tables.binary, str(exc))
                first = first or exc
        if first is not None:
            raise first

    def install_default_deny(self) -> None:
        self._every(FamilyTables.install_default_deny)

    def remove_default_deny(self) -> int:
        """Remove the deny rule of every family; stops at the first failure (the rest stays denied)."""
        return sum(tables.remove_default_deny() for tables in self.tables.values())

    def install_ingress(self, rules: IngressRules) -> None:
        """Install our chains in every family; stops at the first failure (the caller removes them)."""
        if not rules.chains:
            return
        for tables in self.tables.values():
            tables.install_ingress(rules)

    def remove_ingress(self, rules: IngressRules) -> None:
        self._every(lambda tables: tables.remove_ingress(rules))


def _is_not_found(stderr: str) -> bool:
    text = stderr.lower()
    return (
        "does a matching rule exist" in text
        or "couldn't load target" in text
        or "no chain/target/match" in text
        or "bad rule" in text
        or "doesn't exist" in text
        or "does not exist" in text
        or (text == "")
    )
