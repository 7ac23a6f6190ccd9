"""UpdateInterface / UpdateRoutes / AddARPNeighbors on the guest's real interfaces (pyroute2).

The host describes the pod network; everything it sends is validated (interface names, MAC, IP
addresses and prefix lengths via ``ipaddress``, address families, scopes, route flags, neighbour
states) before a netlink message is built, so a refused request changes nothing. The interface is
found by its MAC address like kata-agent does, among the Ethernet links only (loopback's all-zero
address can never be claimed); no match → kata's ``Link not found`` text, which makes the runtime
retry while the device is still being hot-plugged. A rename onto another link's name, duplicate
addresses, and routes or neighbours on a non-Ethernet link (``lo``) are refused. Routes without a
gateway are added first (kata-agent's order), so a gateway route finds its link route.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from guest.protocols import agent_pb2, types_pb2

from .errors import AgentError, InvalidRequestError

__all__ = ["Network"]

_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_PREFIX = re.compile(r"[0-9]{1,3}")
IFF_NOARP = 0x80
NUD_PERMANENT = 0x80
NUD_ALL = 0xFF  # NUD_INCOMPLETE .. NUD_PERMANENT
RT_SCOPE_MAX = 255
RTNH_F_ONLINK = 0x04
ARPHRD_ETHER = 1


def _family(value: int) -> int:
    import socket

    return socket.AF_INET6 if value == types_pb2.IPFamily.v6 else socket.AF_INET


def _address(field: str, addr: str, family: int) -> str:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise InvalidRequestError(field, addr, "an IP address") from None
    if (ip.version == 6) != (family == types_pb2.IPFamily.v6):
        raise InvalidRequestError(field, addr, f"an IPv{6 if family == types_pb2.IPFamily.v6 else 4} address")
    return str(ip)


def _ifname(field: str, name: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise InvalidRequestError(field, name, "an interface name (1-15 of [A-Za-z0-9_.-])")
    return name


def _unicast_mac(field: str, mac: str) -> str:
    if not _MAC.fullmatch(mac):
        raise InvalidRequestError(field, mac, "a MAC address aa:bb:cc:dd:ee:ff")
    if int(mac[:2], 16) & 1 or mac.replace(":", "").strip("0") == "":
        raise InvalidRequestError(field, mac, "a unicast MAC address (not zero, not multicast)")
    return mac.lower()


class Network:
    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def _index(self, field: str, name: str) -> int:
        """The Ethernet link named ``name`` (routes and neighbours never go on ``lo`` or a tunnel)."""
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise AgentError(f"Link not found (name {name})")
        index = int(found[0])
        if int(self._ipr.get_links(index)[0]["ifi_type"]) != ARPHRD_ETHER:
            raise InvalidRequestError(field, name, "an Ethernet interface of the pod")
        return index

    def update_interface(self, iface: types_pb2.Interface) -> types_pb2.Interface:
        mac = _unicast_mac("interface.hwAddr", iface.hwAddr)
        name = _ifname("interface.name", iface.name)
        if iface.mtu and not 68 <= iface.mtu <= 65535:
            raise InvalidRequestError("interface.mtu", iface.mtu, "68..65535")
        if iface.raw_flags & ~IFF_NOARP:
            raise InvalidRequestError("interface.raw_flags", iface.raw_flags, "0 or IFF_NOARP (128)")
        addresses: list[tuple[str, int, int]] = []
        for i, a in enumerate(iface.IPAddresses):
            addr = _address(f"interface.IPAddresses[{i}].address", a.address, a.family)
            ip = ipaddress.ip_address(addr)
            if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
                raise InvalidRequestError(f"interface.IPAddresses[{i}].address", a.address,
                                          "a unicast address (not loopback, multicast or unspecified)")
            bits = 128 if a.family == types_pb2.IPFamily.v6 else 32
            if not (_PREFIX.fullmatch(a.mask) and 0 <= int(a.mask) <= bits):
                raise InvalidRequestError(f"interface.IPAddresses[{i}].mask", a.mask,
                                          f"a prefix length 0..{bits}")
            if any(addr == known for known, _, _ in addresses):
                raise InvalidRequestError(f"interface.IPAddresses[{i}].address", a.address,
                                          "each address once")
            addresses.append((addr, int(a.mask), _family(a.family)))
        index = None
        for link in self._ipr.get_links():
            if (int(link["ifi_type"]) == ARPHRD_ETHER
                    and str(link.get_attr("IFLA_ADDRESS") or "").lower() == mac):
                index = int(link["index"])
                break
        if index is None:
            raise AgentError(f"Link not found (hwAddr {mac})")
        if any(int(other) != index for other in self._ipr.link_lookup(ifname=name)):
            raise InvalidRequestError("interface.name", name, "a name no other interface has")
        self._ipr.link("set", index=index, state="down")
        changes: dict[str, Any] = {"ifname": name}
        if iface.mtu:
            changes["mtu"] = iface.mtu
        self._ipr.link("set", index=index, **changes)
        if iface.raw_flags & IFF_NOARP:
            self._ipr.link("set", index=index, flags=IFF_NOARP, mask=IFF_NOARP)
        self._ipr.flush_addr(index=index)
        for addr, prefix, family in addresses:
            self._ipr.addr("add", index=index, address=addr, prefixlen=prefix, family=family)
        self._ipr.link("set", index=index, state="up")
        return iface

    def update_routes(self, routes: agent_pb2.Routes) -> agent_pb2.Routes:
        planned = []
        for i, r in enumerate(routes.Routes):
            field = f"Routes[{i}]"
            spec: dict[str, Any] = {"oif": self._index(f"{field}.device",
                                                       _ifname(f"{field}.device", r.device)),
                                    "family": _family(r.family)}
            if r.dest:
                try:
                    net = ipaddress.ip_network(r.dest, strict=False)
                except ValueError:
                    raise InvalidRequestError(f"Routes[{i}].dest", r.dest,
                                              "a CIDR or empty (default)") from None
                if (net.version == 6) != (r.family == types_pb2.IPFamily.v6):
                    raise InvalidRequestError(f"{field}.dest", r.dest, "a network of the route's family")
                spec["dst"] = f"{net.network_address}/{net.prefixlen}"
            else:
                spec["dst"] = "::/0" if r.family == types_pb2.IPFamily.v6 else "0.0.0.0/0"
            if r.gateway:
                spec["gateway"] = _address(f"Routes[{i}].gateway", r.gateway, r.family)
            if r.source:
                spec["prefsrc"] = _address(f"Routes[{i}].source", r.source, r.family)
            if r.scope > RT_SCOPE_MAX:
                raise InvalidRequestError(f"Routes[{i}].scope", r.scope, f"0..{RT_SCOPE_MAX}")
            spec["scope"] = r.scope
            if r.flags & ~RTNH_F_ONLINK:
                raise InvalidRequestError(f"{field}.flags", r.flags, "0 or RTNH_F_ONLINK (4)")
            if r.flags:
                spec["flags"] = r.flags
            planned.append(spec)
        # kata-agent's order: link routes (no gateway) first, so a gateway route finds its link route.
        planned.sort(key=lambda spec: "gateway" in spec)
        for spec in planned:
            self._ipr.route("replace", **spec)
        return routes

    def add_arp_neighbors(self, neighbors: agent_pb2.ARPNeighbors) -> None:
        planned = []
        for i, n in enumerate(neighbors.ARPNeighbors):
            lladdr = _unicast_mac(f"ARPNeighbors[{i}].lladdr", n.lladdr)
            dst = _address(f"ARPNeighbors[{i}].toIPAddress", n.toIPAddress.address, n.toIPAddress.family)
            if not 0 <= n.state <= NUD_ALL:
                raise InvalidRequestError(f"ARPNeighbors[{i}].state", n.state, f"a NUD state 0..{NUD_ALL}")
            device = _ifname(f"ARPNeighbors[{i}].device", n.device)
            planned.append({"dst": dst, "lladdr": lladdr,
                            "ifindex": self._index(f"ARPNeighbors[{i}].device", device),
                            "state": n.state or NUD_PERMANENT, "family": _family(n.toIPAddress.family)})
        for spec in planned:
            self._ipr.neigh("replace", **spec)


# -- ListInterfaces / ListRoutes: the guest's real netlink state, as kata-agent reports it -----------
# Kept apart from the Update* methods above (separate functions, read-only).

RT_TABLE_MAIN = 254
_RTAX_MTU = "RTAX_MTU"


def _link_names(ipr: Any) -> dict[int, str]:
    return {int(link["index"]): str(link.get_attr("IFLA_IFNAME") or "") for link in ipr.get_links()}


def _ip_family(family: int) -> types_pb2.IPFamily:
    import socket

    return types_pb2.IPFamily.v6 if family == socket.AF_INET6 else types_pb2.IPFamily.v4


def list_interfaces(network: Network) -> agent_pb2.Interfaces:
    """Every link (loopback included) with its addresses, MTU, MAC, flags and link kind."""
    ipr = network._ipr
    by_link: dict[int, list[types_pb2.IPAddress]] = {}
    for a in ipr.get_addr():
        address = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
        if address is None:
            continue
        by_link.setdefault(int(a["index"]), []).append(types_pb2.IPAddress(
            family=_ip_family(int(a["family"])), address=str(address), mask=str(a["prefixlen"])))
    out = agent_pb2.Interfaces()
    for link in ipr.get_links():
        index = int(link["index"])
        name = str(link.get_attr("IFLA_IFNAME") or "")
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        out.Interfaces.add(device=name, name=name, IPAddresses=by_link.get(index, []),
                           mtu=int(link.get_attr("IFLA_MTU") or 0),
                           hwAddr=str(link.get_attr("IFLA_ADDRESS") or ""), type=str(kind or ""),
                           raw_flags=int(link["flags"]) & 0xFFFFFFFF)
    return out


def list_routes(network: Network) -> agent_pb2.Routes:
    """The main table's IPv4 and IPv6 routes (kata-agent skips the local and other tables); the
    default route has an empty ``dest``."""
    import socket

    ipr = network._ipr
    names = _link_names(ipr)
    out = agent_pb2.Routes()
    for family in (socket.AF_INET, socket.AF_INET6):
        for r in ipr.get_routes(family=family):
            table = r.get_attr("RTA_TABLE") or r["table"]
            if int(table) != RT_TABLE_MAIN:
                continue
            dst = r.get_attr("RTA_DST")
            dest = f"{dst}/{r['dst_len']}" if dst is not None and int(r["dst_len"]) else ""
            oif = r.get_attr("RTA_OIF")
            metrics = r.get_attr("RTA_METRICS")
            mtu = metrics.get_attr(_RTAX_MTU) if metrics is not None else None
            out.Routes.add(dest=dest, gateway=str(r.get_attr("RTA_GATEWAY") or ""),
                           device=names.get(int(oif), "") if oif is not None else "",
                           source=str(r.get_attr("RTA_PREFSRC") or ""), scope=int(r["scope"]),
                           family=_ip_family(family), flags=int(r["flags"]), mtu=int(mtu or 0))
    return out
