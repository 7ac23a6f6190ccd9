"""Proxy configuration in Contrast's syntax, parsed strictly into frozen values.

The three variables are the ones ``contrast generate`` fills from the pod annotations:

* ``CONTRAST_INGRESS_PROXY_CONFIG``: ``<name>#<port>#<disableTLS>`` entries joined by ``##``.
  ``disableTLS`` true means plain passthrough, false means TLS without a client certificate; every port
  not listed requires mTLS. The single value ``DISABLED`` turns ingress redirection off (egress-only pods).
* ``CONTRAST_EGRESS_PROXY_CONFIG``: ``<name>#<listenIP>:<listenPort>#<remoteHost>:<remotePort>`` entries
  joined by ``##``; the listen address must be in 127.0.0.0/8 so that plaintext never leaves the pod. The
  remote is a DNS name (resolved IPv4-only, as Envoy's V4_ONLY), an IPv4 address, or an IPv6 address in
  brackets (``[fd00::2]:8080``, an extension of Contrast's syntax for dual-stack clusters).
* ``CONTRAST_ADMIN_PORT``: decimal port of the admin interface (metrics, probes); empty means none.

Parsing is all-or-nothing: the first bad entry raises ``ConfigError`` naming it, before any state changes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from meshproxy.errors import ConfigError

INGRESS_ENV = "CONTRAST_INGRESS_PROXY_CONFIG"
EGRESS_ENV = "CONTRAST_EGRESS_PROXY_CONFIG"
ADMIN_ENV = "CONTRAST_ADMIN_PORT"

#: Ingress value that disables all ingress redirection (Contrast PR #1725).
INGRESS_DISABLED = "DISABLED"

#: Listener ports of the ingress proxy, as in Contrast's iptables rules.
MTLS_PORT = 15006
TLS_NO_CLIENT_AUTH_PORT = 15007

ENTRY_SEPARATOR = "##"
FIELD_SEPARATOR = "#"

# Go's strconv.ParseBool accepts exactly these spellings.
_GO_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}
# A Kubernetes-style name: what an Envoy listener/cluster name can safely be in our metrics labels.
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
# RFC 1123 host name (a Service name or FQDN), or a dotted IPv4 address, checked separately.
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class IngressEntry:
    """One listed ingress port: ``disable_tls`` true = plain passthrough, false = TLS without client auth."""

    name: str
    port: int
    disable_tls: bool


@dataclass(frozen=True, slots=True)
class EgressEntry:
    """One egress listener: plaintext in on ``listen_ip:listen_port``, mTLS out to the remote.

    ``remote_host`` is a DNS name, a dotted IPv4 address or a compressed IPv6 address (no brackets).
    """

    name: str
    listen_ip: str
    listen_port: int
    remote_host: str
    remote_port: int


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    ingress: tuple[IngressEntry, ...] = ()
    egress: tuple[EgressEntry, ...] = ()
    admin_port: int | None = None
    ingress_disabled: bool = False

    @property
    def plain_ports(self) -> tuple[int, ...]:
        return tuple(e.port for e in self.ingress if e.disable_tls)

    @property
    def tls_no_client_auth_ports(self) -> tuple[int, ...]:
        return tuple(e.port for e in self.ingress if not e.disable_tls)


def _parse_port(variable: str, entry: str, text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise ConfigError(variable, entry, f"{what} {text!r} is not a decimal port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(variable, entry, f"{what} {port} is outside 1..65535")
    return port


def _parse_name(variable: str, entry: str, text: str) -> str:
    if not _NAME.fullmatch(text):
        raise ConfigError(variable, entry, f"name {text!r} must be 1-63 characters of [A-Za-z0-9._-]")
    return text


def _split_entries(value: str) -> list[str]:
    value = value.strip()
    return [] if not value else value.split(ENTRY_SEPARATOR)


def parse_ingress(value: str) -> tuple[tuple[IngressEntry, ...], bool]:
    """Parse the ingress variable; returns the entries and whether ingress is disabled."""
    if value.strip() == INGRESS_DISABLED:
        return (), True
    entries: list[IngressEntry] = []
    seen_names: set[str] = set()
    seen_ports: set[int] = set()
    for raw in _split_entries(value):
        fields = raw.split(FIELD_SEPARATOR)
        if len(fields) != 3:
            raise ConfigError(INGRESS_ENV, raw, f"want <name>#<port>#<disableTLS>, got {len(fields)} fields")
        name = _parse_name(INGRESS_ENV, raw, fields[0])
        port = _parse_port(INGRESS_ENV, raw, fields[1], "port")
        if fields[2] not in _GO_BOOLS:
            raise ConfigError(INGRESS_ENV, raw, f"disableTLS {fields[2]!r} is not a boolean (true/false)")
        if port in (MTLS_PORT, TLS_NO_CLIENT_AUTH_PORT):
            raise ConfigError(INGRESS_ENV, raw, f"port {port} is reserved for the proxy's own listeners")
        if name in seen_names:
            raise ConfigError(INGRESS_ENV, raw, f"duplicate name {name!r}")
        if port in seen_ports:
            raise ConfigError(INGRESS_ENV, raw, f"duplicate port {port}")
        seen_names.add(name)
        seen_ports.add(port)
        entries.append(IngressEntry(name=name, port=port, disable_tls=_GO_BOOLS[fields[2]]))
    return tuple(entries), False


def _parse_ipv6_remote(entry: str, text: str) -> str:
    inner = text[1:-1]
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise ConfigError(EGRESS_ENV, entry, f"remote host {text!r} is not an IPv6 address") from None
    # A zone would be a host-chosen interface name; a link-local remote without one is unreachable.
    if address.scope_id is not None or address.is_link_local:
        raise ConfigError(EGRESS_ENV, entry, f"remote host {text!r}: link-local and zoned IPv6 addresses "
                          "are not supported")
    if address.is_unspecified or address.is_multicast:
        raise ConfigError(EGRESS_ENV, entry, f"remote host {text!r} is not a unicast address")
    return address.compressed


def _parse_host(entry: str, text: str) -> str:
    if len(text) > 253 or not text:
        raise ConfigError(EGRESS_ENV, entry, f"remote host {text!r} is not a host name")
    if text.startswith("[") and text.endswith("]"):
        return _parse_ipv6_remote(entry, text)
    try:
        ipaddress.IPv4Address(text)
        return text
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(EGRESS_ENV, entry,
                          f"remote host {text!r} is not an IPv4 address, [IPv6 address] or DNS name")
    return text


def parse_egress(value: str) -> tuple[EgressEntry, ...]:
    entries: list[EgressEntry] = []
    seen_names: set[str] = set()
    seen_listen: set[tuple[str, int]] = set()
    for raw in _split_entries(value):
        fields = raw.split(FIELD_SEPARATOR)
        if len(fields) != 3:
            raise ConfigError(
                EGRESS_ENV, raw, f"want <name>#<listenIP>:<listenPort>#<remoteHost>:<remotePort>, "
                f"got {len(fields)} fields")
        name = _parse_name(EGRESS_ENV, raw, fields[0])
        listen_ip, sep, listen_port_text = fields[1].rpartition(":")
        if not sep:
            raise ConfigError(EGRESS_ENV, raw, f"listen address {fields[1]!r} has no :port")
        try:
            address = ipaddress.IPv4Address(listen_ip)
        except ValueError:
            raise ConfigError(EGRESS_ENV, raw, f"listen IP {listen_ip!r} is not an IPv4 address") from None
        if not address.is_loopback:
            # Plaintext from the application must never be reachable from outside the pod.
            raise ConfigError(EGRESS_ENV, raw, f"listen IP {listen_ip} is not in 127.0.0.0/8")
        listen_port = _parse_port(EGRESS_ENV, raw, listen_port_text, "listen port")
        remote_host, sep, remote_port_text = fields[2].rpartition(":")
        if not sep:
            raise ConfigError(EGRESS_ENV, raw, f"remote address {fields[2]!r} has no :port")
        host = _parse_host(raw, remote_host)
        remote_port = _parse_port(EGRESS_ENV, raw, remote_port_text, "remote port")
        if name in seen_names:
            raise ConfigError(EGRESS_ENV, raw, f"duplicate name {name!r}")
        if (str(address), listen_port) in seen_listen:
            raise ConfigError(EGRESS_ENV, raw, f"duplicate listen address {address}:{listen_port}")
        seen_names.add(name)
        seen_listen.add((str(address), listen_port))
        entries.append(EgressEntry(name, str(address), listen_port, host, remote_port))
    return tuple(entries)


def parse_admin_port(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    return _parse_port(ADMIN_ENV, value, value, "admin port")


def from_environ(environ: Mapping[str, str]) -> ProxyConfig:
    """Build the configuration from the CONTRAST_* variables; raises ``ConfigError`` on any bad entry."""
    ingress, disabled = parse_ingress(environ.get(INGRESS_ENV, ""))
    egress = parse_egress(environ.get(EGRESS_ENV, ""))
    admin = parse_admin_port(environ.get(ADMIN_ENV, ""))
    if admin is not None and admin in (MTLS_PORT, TLS_NO_CLIENT_AUTH_PORT):
        raise ConfigError(ADMIN_ENV, str(admin), "admin port collides with an ingress listener port")
    return ProxyConfig(ingress=ingress, egress=egress, admin_port=admin, ingress_disabled=disabled)
