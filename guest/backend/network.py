"""UpdateInterface / UpdateRoutes / AddARPNeighbors on the guest's real interfaces (pyroute2).

The host describes the pod network; everything it sends is validated (interface names, MAC, IP
addresses and prefix lengths via ``ipaddress``) before a netlink message is built. The interface is
found by its MAC address like kata-agent does; no match → kata's ``Link not found`` text, which makes
the runtime retry while the device is still being hot-plugged.
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
IFF_NOARP = 0x80
NUD_PERMANENT = 0x80
RT_SCOPE_MAX = 255


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


class Network:
    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def _index(self, name: str) -> int:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise AgentError(f"Link not found (name {name})")
        return int(found[0])

    def update_interface(self, iface: types_pb2.Interface) -> types_pb2.Interface:
        if not _MAC.fullmatch(iface.hwAddr):
            raise InvalidRequestError("interface.hwAddr", iface.hwAddr, "a MAC address aa:bb:cc:dd:ee:ff")
        name = _ifname("interface.name", iface.name)
        if iface.mtu and not 68 <= iface.mtu <= 65535:
            raise InvalidRequestError("interface.mtu", iface.mtu, "68..65535")
        if iface.raw_flags & ~IFF_NOARP:
            raise InvalidRequestError("interface.raw_flags", iface.raw_flags, "0 or IFF_NOARP (128)")
        addresses = []
        for i, a in enumerate(iface.IPAddresses):
            addr = _address(f"interface.IPAddresses[{i}].address", a.address, a.family)
            bits = 128 if a.family == types_pb2.IPFamily.v6 else 32
            if not (a.mask.isdigit() and 0 <= int(a.mask) <= bits):
                raise InvalidRequestError(f"interface.IPAddresses[{i}].mask", a.mask,
                                          f"a prefix length 0..{bits}")
            addresses.append((addr, int(a.mask), _family(a.family)))
        mac = iface.hwAddr.lower()
        index = None
        for link in self._ipr.get_links():
            if str(link.get_attr("IFLA_ADDRESS") or "").lower() == mac:
                index = int(link["index"])
                break
        if index is None:
            raise AgentError(f"Link not found (hwAddr {mac})")
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
            spec: dict[str, Any] = {"oif": self._index(_ifname(f"Routes[{i}].device", r.device)),
                                    "family": _family(r.family)}
            if r.dest:
                try:
                    net = ipaddress.ip_network(r.dest, strict=False)
                except ValueError:
                    raise InvalidRequestError(f"Routes[{i}].dest", r.dest,
                                              "a CIDR or empty (default)") from None
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
            planned.append(spec)
        for spec in planned:
            self._ipr.route("replace", **spec)
        return routes

    def add_arp_neighbors(self, neighbors: agent_pb2.ARPNeighbors) -> None:
        planned = []
        for i, n in enumerate(neighbors.ARPNeighbors):
            if not _MAC.fullmatch(n.lladdr):
                raise InvalidRequestError(f"ARPNeighbors[{i}].lladdr", n.lladdr, "a MAC address")
            dst = _address(f"ARPNeighbors[{i}].toIPAddress", n.toIPAddress.address, n.toIPAddress.family)
            planned.append({"dst": dst, "lladdr": n.lladdr.lower(),
                            "ifindex": self._index(_ifname(f"ARPNeighbors[{i}].device", n.device)),
                            "state": n.state or NUD_PERMANENT, "family": _family(n.toIPAddress.family)})
        for spec in planned:
            self._ipr.neigh("replace", **spec)
