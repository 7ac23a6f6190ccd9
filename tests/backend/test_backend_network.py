"""guest.backend.network on real netlink, in a scratch network namespace on the host (root).

The namespace holds what a pod VM has: ``lo`` and one Ethernet NIC (one end of a veth pair with the MAC the
host announces). Kata's sequence configures it; then every hostile UpdateInterface / UpdateRoutes /
AddARPNeighbors the host could send is refused with an error naming the field, and the namespace's
links, addresses, routes and neighbours are exactly what they were.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guest.backend.errors import AgentError, InvalidRequestError
from guest.protocols import agent_pb2, types_pb2
from tests.support import in_netns, scratch_netns

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns)")]

MAC = "52:54:00:12:34:56"
V4, V6 = types_pb2.IPFamily.v4, types_pb2.IPFamily.v6


def _ip(netns: Path, *argv: str) -> str:
    return subprocess.run(["ip", "-n", netns.name, *argv], check=True, capture_output=True, text=True,
                          timeout=30).stdout


def _snapshot(netns: Path) -> str:
    return "\n".join(_ip(netns, *a) for a in (("-d", "link"), ("addr",), ("route", "show", "table", "all"),
                                             ("neigh",)))


def _iface(**kw: Any) -> types_pb2.Interface:
    fields: dict[str, Any] = {"device": "eth0", "name": "eth0", "mtu": 1400, "hwAddr": MAC, "type": "virtual",
                              "IPAddresses": [types_pb2.IPAddress(family=V4, address="10.1.2.5", mask="24")]}
    fields.update(kw)
    return types_pb2.Interface(**fields)


@pytest.fixture
def pod_net() -> Iterator[tuple[Path, Callable[[Callable[[Any], Any]], Any]]]:
    with scratch_netns("bnet") as netns:
        _ip(netns, "link", "add", "ens3", "address", MAC, "type", "veth", "peer", "name", "peer0")

        def run(fn: Callable[[Any], Any]) -> Any:
            def body() -> Any:
                from guest.backend.network import Network

                net = Network()
                try:
                    return fn(net)
                finally:
                    net.close()

            return in_netns(netns, body)

        yield netns, run


def _configure(run: Callable[[Callable[[Any], Any]], Any]) -> None:
    run(lambda n: n.update_interface(_iface()))
    # A gateway route listed before the link route it needs: applied link routes first, as
    # kata-agent does (in the given order the kernel refuses the gateway route).
    routes = agent_pb2.Routes(Routes=[
        types_pb2.Route(dest="10.50.0.0/16", gateway="10.9.0.1", device="eth0", family=V4),
        types_pb2.Route(dest="10.9.0.0/16", device="eth0", family=V4, scope=253),
        types_pb2.Route(dest="", gateway="10.1.2.1", device="eth0", family=V4),
    ])
    run(lambda n: n.update_routes(routes))
    neigh = types_pb2.ARPNeighbor(toIPAddress=types_pb2.IPAddress(address="10.1.2.1"), device="eth0",
                                  lladdr="52:54:00:00:00:aa", state=0x80)
    run(lambda n: n.add_arp_neighbors(agent_pb2.ARPNeighbors(ARPNeighbors=[neigh])))


def test_kata_sequence_configures_the_nic(pod_net: tuple[Path, Any]) -> None:
    netns, run = pod_net
    _configure(run)
    link = _ip(netns, "link", "show", "eth0")
    assert "mtu 1400" in link and MAC in link and "UP" in link
    assert "inet 10.1.2.5/24" in _ip(netns, "addr", "show", "eth0")
    routes = {line.split(" proto ")[0] for line in _ip(netns, "route").splitlines()}
    assert {"default via 10.1.2.1 dev eth0", "10.9.0.0/16 dev eth0",
            "10.50.0.0/16 via 10.9.0.1 dev eth0"} <= routes
    assert "10.1.2.1 dev eth0 lladdr 52:54:00:00:00:aa PERMANENT" in _ip(netns, "neigh")


HOSTILE_INTERFACES = {
    "loopback's all-zero MAC": (_iface(hwAddr="00:00:00:00:00:00"), "interface.hwAddr"),
    "multicast MAC": (_iface(hwAddr="01:00:5e:00:00:01"), "interface.hwAddr"),
    "MAC with junk": (_iface(hwAddr="52:54:00:12:34:56,x"), "interface.hwAddr"),
    "rename onto lo": (_iface(name="lo"), "interface.name"),
    "name with a shell metacharacter": (_iface(name="eth0;reboot"), "interface.name"),
    "name too long": (_iface(name="e" * 16), "interface.name"),
    "empty name": (_iface(name=""), "interface.name"),
    "superscript digit prefix": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="10.1.2.5",
                                                                         mask="\u00b2")]), "mask"),
    "prefix too long": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="10.1.2.5", mask="33")]),
                        "mask"),
    "negative prefix": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="10.1.2.5", mask="-1")]),
                        "mask"),
    "loopback address": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="127.0.0.2", mask="8")]),
                         "address"),
    "multicast address": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="224.0.0.1",
                                                                  mask="32")]), "address"),
    "not an address": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="10.1.2.300",
                                                               mask="24")]), "address"),
    "v6 address as v4": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="fd00::5", mask="64")]),
                         "address"),
    "duplicate address": (_iface(IPAddresses=[types_pb2.IPAddress(family=V4, address="10.1.2.5", mask="24"),
                                              types_pb2.IPAddress(family=V4, address="10.1.2.5", mask="24")]),
                          "address"),
    "tiny MTU": (_iface(mtu=10), "interface.mtu"),
    "other flags": (_iface(raw_flags=0x1), "interface.raw_flags"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_INTERFACES))
def test_hostile_update_interface_is_refused_and_changes_nothing(pod_net: tuple[Path, Any],
                                                                 case: str) -> None:
    netns, run = pod_net
    iface, field = HOSTILE_INTERFACES[case]
    before = _snapshot(netns)
    with pytest.raises(InvalidRequestError) as info:
        run(lambda n: n.update_interface(iface))
    assert field in str(info.value)
    assert _snapshot(netns) == before


def _route(**kw: Any) -> agent_pb2.Routes:
    fields: dict[str, Any] = {"dest": "10.60.0.0/16", "gateway": "10.1.2.1", "device": "eth0", "family": V4}
    fields.update(kw)
    # A valid route first: nothing of a request with one bad route may be applied.
    good = types_pb2.Route(dest="10.70.0.0/16", device="eth0", family=V4, scope=253)
    return agent_pb2.Routes(Routes=[good, types_pb2.Route(**fields)])


HOSTILE_ROUTES = {
    "route on lo": (_route(device="lo", gateway=""), "Routes[1].device"),
    "device with a space": (_route(device="eth0 x"), "Routes[1].device"),
    "v4 destination as v6": (_route(family=V6, gateway=""), "Routes[1].dest"),
    "v6 gateway on a v4 route": (_route(gateway="fe80::1"), "Routes[1].gateway"),
    "not a network": (_route(dest="10.60.0.0/99"), "Routes[1].dest"),
    "unknown flags": (_route(flags=0x200), "Routes[1].flags"),
    "scope out of range": (_route(scope=300), "Routes[1].scope"),
    "source not an address": (_route(source="me"), "Routes[1].source"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ROUTES))
def test_hostile_update_routes_are_refused_and_change_nothing(pod_net: tuple[Path, Any], case: str) -> None:
    netns, run = pod_net
    _configure(run)
    routes, field = HOSTILE_ROUTES[case]
    before = _snapshot(netns)
    with pytest.raises(InvalidRequestError) as info:
        run(lambda n: n.update_routes(routes))
    assert field in str(info.value)
    assert _snapshot(netns) == before


def _neigh(**kw: Any) -> agent_pb2.ARPNeighbors:
    fields: dict[str, Any] = {"toIPAddress": types_pb2.IPAddress(address="10.1.2.9"), "device": "eth0",
                              "lladdr": "52:54:00:00:00:bb", "state": 0x80}
    fields.update(kw)
    return agent_pb2.ARPNeighbors(ARPNeighbors=[types_pb2.ARPNeighbor(**fields)])


HOSTILE_NEIGHBOURS = {
    "neighbour on lo": (_neigh(device="lo"), "ARPNeighbors[0].device"),
    "all-zero lladdr": (_neigh(lladdr="00:00:00:00:00:00"), "ARPNeighbors[0].lladdr"),
    "state out of range": (_neigh(state=0x1000), "ARPNeighbors[0].state"),
    "negative state": (_neigh(state=-1), "ARPNeighbors[0].state"),
    "not an address": (_neigh(toIPAddress=types_pb2.IPAddress(address="10.1.2")), "toIPAddress"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NEIGHBOURS))
def test_hostile_arp_neighbours_are_refused_and_change_nothing(pod_net: tuple[Path, Any], case: str) -> None:
    netns, run = pod_net
    _configure(run)
    neighbours, field = HOSTILE_NEIGHBOURS[case]
    before = _snapshot(netns)
    with pytest.raises(InvalidRequestError) as info:
        run(lambda n: n.add_arp_neighbors(neighbours))
    assert field in str(info.value)
    assert _snapshot(netns) == before


def test_unknown_mac_is_link_not_found(pod_net: tuple[Path, Any]) -> None:
    netns, run = pod_net
    before = _snapshot(netns)
    with pytest.raises(AgentError, match="Link not found"):
        run(lambda n: n.update_interface(_iface(hwAddr="52:54:00:00:00:01")))
    assert _snapshot(netns) == before
