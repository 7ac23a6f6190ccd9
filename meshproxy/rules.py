"""Netfilter rules as data: the configuration turned into iptables rule specifications (pure).

The shape is Contrast's (service-mesh/iptables.go and internal/defaultdeny):

* table ``mangle``: ``PREROUTING -p tcp -j CONTRAST_INBOUND``;
  ``CONTRAST_INBOUND`` returns for loopback and for established/related flows (so only the first packet of a
  connection is steered, and the proxy's own connections to the application over ``lo`` pass), then jumps
  to ``CONTRAST_IN_REDIRECT``, which returns for plain ports, sends TLS-without-client-auth ports to
  15007 and everything else to 15006.
* table ``filter``: the default-deny rule ``INPUT -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP``
  that the pod image installs before anything runs and the sidecar removes once it listens.

Every rule exists in both address families (iptables and ip6tables of the same backend): a pod has at least
a link-local IPv6 address, so rules for IPv4 alone leave the application reachable in plaintext over IPv6.
The mangle chains are the same text for both. The IPv6 deny rule exempts ICMPv6, which carries neighbour
discovery: IPv6 has no ARP, and dropping neighbour advertisements would cut the pod's own outbound IPv6
connections (the initializer's, while the deny rule is in place). ICMPv6 never reaches an application's
TCP or UDP socket.

Contrast sets no TPROXY mark (delivery to a local address needs none). ``tproxy_mark`` adds
``--tproxy-mark``, and marks the later packets of proxied connections with ``-m socket --transparent``,
for setups that also steer non-local destinations via a fwmark routing rule (see ``routing.py``); it is
off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from meshproxy.config import MTLS_PORT, TLS_NO_CLIENT_AUTH_PORT, ProxyConfig

MANGLE = "mangle"
FILTER = "filter"
INBOUND_CHAIN = "CONTRAST_INBOUND"
REDIRECT_CHAIN = "CONTRAST_IN_REDIRECT"


class Family(Enum):
    """An address family with the name of its iptables front end."""

    IPV4 = "iptables"
    IPV6 = "ip6tables"


FAMILIES = (Family.IPV4, Family.IPV6)


@dataclass(frozen=True, slots=True)
class Rule:
    table: str
    chain: str
    spec: tuple[str, ...]

    def render(self) -> str:
        """The rule as ``iptables -S`` would print it (used by golden files and logs)."""
        return f"-t {self.table} -A {self.chain} {' '.join(self.spec)}"


#: Drop every new inbound connection; installed for the image, removed by the proxy once it listens.
DEFAULT_DENY = Rule(FILTER, "INPUT",
                    ("-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP"))

#: The same for IPv6, except ICMPv6 (neighbour discovery; see the module docstring).
DEFAULT_DENY_IPV6 = Rule(FILTER, "INPUT",
                         ("!", "-p", "ipv6-icmp", *DEFAULT_DENY.spec))


def default_deny(family: Family) -> Rule:
    return DEFAULT_DENY if family is Family.IPV4 else DEFAULT_DENY_IPV6

#: The jump from the built-in chain into ours; the only rule we add outside our own chains.
PREROUTING_JUMP = Rule(MANGLE, "PREROUTING", ("-p", "tcp", "-j", INBOUND_CHAIN))


@dataclass(frozen=True, slots=True)
class IngressRules:
    """Our chains with their full contents, plus the hook rule that enters them."""

    chains: dict[str, tuple[Rule, ...]]
    hooks: tuple[Rule, ...]

    def render(self) -> list[str]:
        lines = [f"-t {MANGLE} -N {chain}" for chain in self.chains]
        for rules in self.chains.values():
            lines.extend(rule.render() for rule in rules)
        lines.extend(rule.render() for rule in self.hooks)
        return lines


def _tproxy(port: int, mark: int | None) -> tuple[str, ...]:
    target = ("-j", "TPROXY", "--on-port", str(port))
    return target if mark is None else (*target, "--tproxy-mark", f"{mark:#x}/{mark:#x}")


def ingress_rules(config: ProxyConfig, tproxy_mark: int | None = None) -> IngressRules:
    """The mangle-table TPROXY rules for ``config``, for either family; empty when ingress is disabled."""
    if config.ingress_disabled:
        return IngressRules(chains={}, hooks=())
    inbound = [
        Rule(MANGLE, INBOUND_CHAIN, ("-i", "lo", "-j", "RETURN")),
        Rule(MANGLE, INBOUND_CHAIN, ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN")),
        Rule(MANGLE, INBOUND_CHAIN, ("-j", REDIRECT_CHAIN)),
    ]
    if tproxy_mark is not None:
        # Only a connection's first packet passes TPROXY (the conntrack RETURN); for a non-local
        # destination the later ones must carry the mark too, or they are routed away instead of reaching
        # the proxy's socket. Mark every packet of a transparent (proxy) socket before that RETURN.
        mark = f"{tproxy_mark:#x}/{tproxy_mark:#x}"
        socket_mark = ("-p", "tcp", "-m", "socket", "--transparent", "-j", "MARK", "--set-xmark", mark)
        inbound.insert(1, Rule(MANGLE, INBOUND_CHAIN, socket_mark))
    redirect: list[Rule] = []
    for entry in config.ingress:
        match = ("-p", "tcp", "-m", "tcp", "--dport", str(entry.port))
        if entry.disable_tls:
            redirect.append(Rule(MANGLE, REDIRECT_CHAIN, (*match, "-j", "RETURN")))
        else:
            target = _tproxy(TLS_NO_CLIENT_AUTH_PORT, tproxy_mark)
            redirect.append(Rule(MANGLE, REDIRECT_CHAIN, (*match, *target)))
    redirect.append(Rule(MANGLE, REDIRECT_CHAIN, ("-p", "tcp", *_tproxy(MTLS_PORT, tproxy_mark))))
    chains = {INBOUND_CHAIN: tuple(inbound), REDIRECT_CHAIN: tuple(redirect)}
    return IngressRules(chains=chains, hooks=(PREROUTING_JUMP,))


def render_all(config: ProxyConfig, tproxy_mark: int | None = None) -> list[str]:
    """Every rule the sidecar manages, per family, as ``show-rules`` prints them."""
    ingress = ingress_rules(config, tproxy_mark).render()
    lines: list[str] = []
    for family in FAMILIES:
        lines.append(f"# {family.value}")
        lines.extend(ingress)
        lines.append(default_deny(family).render() + "  # default deny, removed while the proxy runs")
    return lines
