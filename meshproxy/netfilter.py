"""Apply the rules from ``rules.py`` with iptables: atomic install, idempotent, removable.

The ingress chains are written in one ``iptables-restore --noflush`` transaction: declaring our chains
creates or empties them, so running the install twice leaves exactly one copy and a failure leaves the
table as it was. The single rule outside our chains (the PREROUTING jump) is added only if absent.

The backend defaults to ``iptables-legacy`` when it exists, because the pod image installs the default-deny
rule with it (as Contrast's ``deny-incoming-traffic`` unit does); ``MESHPROXY_IPTABLES`` or ``--iptables``
choose another (``iptables``, ``iptables-nft``). Both halves must use the same backend.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from meshproxy.errors import NetfilterError
from meshproxy.rules import DEFAULT_DENY, MANGLE, IngressRules, Rule

log = logging.getLogger("meshproxy.netfilter")

_TIMEOUT = 30.0


def default_backend() -> str:
    chosen = os.environ.get("MESHPROXY_IPTABLES")
    if chosen:
        return chosen
    return "iptables-legacy" if shutil.which("iptables-legacy") else "iptables"


class Netfilter:
    """Runs one iptables backend; every method is safe to call repeatedly."""

    def __init__(self, iptables: str | None = None) -> None:
        self.iptables = iptables or default_backend()

    def _restore_binary(self) -> str:
        # iptables -> iptables-restore, iptables-legacy -> iptables-legacy-restore, same for -nft.
        return self.iptables + "-restore"

    def _run(self, args: list[str], stdin: str | None = None, binary: str | None = None) -> int:
        argv = [binary or self.iptables, "-w", *args]
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
        if proc.returncode == 0:
            return 0
        # "rule/chain not found" is an answer (1 or 2 depending on backend and case); anything else fails
        if proc.returncode in (1, 2) and _is_not_found(proc.stderr):
            return 1
        raise NetfilterError(argv, proc.returncode, proc.stderr)

    def _must(self, args: list[str]) -> None:
        argv = [self.iptables, "-w", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise NetfilterError(argv, proc.returncode, proc.stderr)

    def has_rule(self, rule: Rule) -> bool:
        return self._run(["-t", rule.table, "-C", rule.chain, *rule.spec]) == 0

    def _save(self, table: str) -> list[str]:
        # iptables-save is the one listing both backends print reliably (iptables-nft 1.8.9 -S can call an
        # unreferenced user chain "incompatible").
        argv = [self.iptables + "-save", "-t", table]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise NetfilterError(argv, proc.returncode, proc.stderr)
        return proc.stdout.splitlines()

    def has_chain(self, table: str, chain: str) -> bool:
        return any(line.startswith(f":{chain} ") for line in self._save(table))

    def list_rules(self, table: str, chain: str) -> list[str]:
        return [line for line in self._save(table) if line.startswith(f"-A {chain} ")]

    # -- default deny -------------------------------------------------------------------------------

    def install_default_deny(self) -> None:
        if not self.has_rule(DEFAULT_DENY):
            self._must(["-t", DEFAULT_DENY.table, "-I", DEFAULT_DENY.chain, "1", *DEFAULT_DENY.spec])
            log.info("event=default_deny_installed backend=%s", self.iptables)

    def remove_default_deny(self) -> None:
        removed = 0
        while self.has_rule(DEFAULT_DENY):
            self._must(["-t", DEFAULT_DENY.table, "-D", DEFAULT_DENY.chain, *DEFAULT_DENY.spec])
            removed += 1
        log.info("event=default_deny_removed backend=%s copies=%d", self.iptables, removed)

    # -- ingress TPROXY chains ---------------------------------------------------------------------

    def install_ingress(self, rules: IngressRules) -> None:
        if not rules.chains:
            return
        lines = [f"*{MANGLE}"]
        lines.extend(f":{chain} - [0:0]" for chain in rules.chains)
        for chain_rules in rules.chains.values():
            lines.extend(f"-A {r.chain} {' '.join(r.spec)}" for r in chain_rules)
        lines.append("COMMIT")
        argv = [self._restore_binary(), "-w", "--noflush"]
        proc = subprocess.run(
            argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
        if proc.returncode != 0:
            raise NetfilterError(argv, proc.returncode, proc.stderr)
        for hook in rules.hooks:
            if not self.has_rule(hook):
                self._must(["-t", hook.table, "-A", hook.chain, *hook.spec])
        log.info(
            "event=ingress_rules_installed backend=%s rules=%d",
            self.iptables,
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
        log.info("event=ingress_rules_removed backend=%s", self.iptables)


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
