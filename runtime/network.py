"""Pod networking on the host: the sandbox's network namespace joined to the pod VM as in Kata's
``tcfilter`` model.

When containerd's CRI plugin gives a sandbox a network namespace (the sandbox spec's ``network``
namespace with a path), CNI has put a veth (``eth0``) with addresses and routes into it. Inside
that namespace the shim then
- creates a tap device ``tap0_cc`` (a fixed name: nothing from the host's strings reaches the
  kernel or a command line) by opening ``/dev/net/tun`` there: the tap lives only while that file
  is open, and the open file is what QEMU gets (``-netdev tap,fd=N``), so QEMU itself runs in no
  namespace of its own and a killed QEMU takes the tap with it;
- gives the tap the veth's MTU, adds an ingress qdisc on both devices and a u32 match-all filter
  with a ``mirred egress redirect`` action each way (veth → tap, tap → veth);
- reads what the guest needs from netlink: the veth's MAC (the VM's NIC gets it, so the bridge
  sees the MAC it expects), MTU, IFF_NOARP, its addresses (no loopback ones), its main-table routes
  except those the kernel made (``proto kernel``), and its permanent neighbours (or a reachable
  one for a gateway) — Kata's ``generateVCNetworkStructures``;
- after the agent answers: UpdateInterface (retried while the guest says ``Link not found``, 20
  times 20 ms apart), UpdateRoutes when a route is left, AddARPNeighbors when a neighbour is
  (UNIMPLEMENTED ignored), as Kata's runtime does.

All netlink work happens on one thread that has joined the pod's namespace (``setns`` affects the
calling thread only; threads it starts inherit it) — pyroute2 over its netlink socket, no ``ip``/``tc``
command lines. ``close`` removes the qdiscs (and with them the filters) and the tap; it is idempotent.

Checks: the namespace path is absolute and normalised, its last component is no symlink, it is an
nsfs network namespace (``NS_GET_NSTYPE``), and not the shim's own namespace; the veth's name,
MAC, MTU and addresses are checked before they go anywhere; one veth at most is supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import logging
import os
import re
import socket
import stat
import struct
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import empty_pb2

from guest.protocols import agent_pb2, types_pb2
from guest.ttrpc import Code, TtrpcError

from .agent import AgentClient
from .errors import FailedPreconditionError, InvalidInputError

__all__ = ["TAP_NAME", "Nic", "PodNetwork", "sandbox_netns"]

log = logging.getLogger("runtime.network")

T = TypeVar("T")

TAP_NAME = "tap0_cc"
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 3)
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
IFF_NOARP = 0x80
RTPROT_KERNEL = 2
RTNH_F_ONLINK = 0x04  # the one route flag that means something in the guest
RT_TABLE_MAIN = 254
NUD_REACHABLE, NUD_PERMANENT = 0x02, 0x80
ETH_P_ALL = 0x0003
INGRESS_PARENT = 0xFFFF0000  # handle ffff:
UPDATE_INTERFACE_RETRIES, UPDATE_INTERFACE_DELAY = 20, 0.02
MAX_PATH = 4096

_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True, slots=True)
class Nic:
    """What QEMU needs for the pod's NIC: the open tap file and the MAC the guest's NIC gets."""

    fd: int
    mac: str

    def __post_init__(self) -> None:
        if not _MAC.fullmatch(self.mac) or self.fd < 0:
            raise InvalidInputError("NIC", (self.fd, self.mac), "an open tap fd and a MAC aa:bb:cc:dd:ee:ff")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The pod's veth as read from its namespace (already checked)."""

    name: str
    index: int
    mac: str
    mtu: int
    noarp: bool
    addresses: tuple[types_pb2.IPAddress, ...]
    routes: tuple[types_pb2.Route, ...]
    neighbors: tuple[types_pb2.ARPNeighbor, ...]


def sandbox_netns(namespaces: Any) -> str | None:
    """The path of the sandbox spec's ``network`` namespace, or None (host network / a new one)."""
    for ns in namespaces:
        if ns.Type == "network" and ns.Path:
            return str(ns.Path)
    return None


def open_netns(path: str) -> int:
    """An fd on the network namespace at ``path``, after the checks in the module's docstring."""
    what = "sandbox network namespace path"
    if not path.startswith("/") or os.path.normpath(path) != path or "\0" in path or len(path) > MAX_PATH:
        raise InvalidInputError(what, path, "an absolute, normalised path")
    # An nsfs file shows as a regular file; anything else (a device, a FIFO) is never opened.
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        raise InvalidInputError(what, path, f"an existing network namespace ({e.strerror})") from None
    if stat.S_ISLNK(mode):
        raise InvalidInputError(what, path, "a network namespace file, not a symlink")
    if not stat.S_ISREG(mode):
        raise InvalidInputError(what, path, "a network namespace (nsfs) file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidInputError(what, path, "a network namespace file, not a symlink") from None
        raise InvalidInputError(what, path, f"an existing network namespace ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
            raise InvalidInputError(what, path, "a network namespace (nsfs) file")
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = -1
        if kind != CLONE_NEWNET:
            raise InvalidInputError(what, path, "a network namespace (nsfs) file")
        st, own = os.fstat(fd), os.stat("/proc/self/ns/net")
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            raise InvalidInputError(what, path, "the pod's own namespace, not the shim's")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _join_netns(fd: int) -> None:
    """Thread initializer: move this thread (only) into the namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _family(netlink_family: int) -> types_pb2.IPFamily:
    return types_pb2.IPFamily.v6 if netlink_family == socket.AF_INET6 else types_pb2.IPFamily.v4


def _checked_ip(what: str, value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise InvalidInputError(what, value, "an IP address") from None


class PodNetwork:
    """The pod's veth joined to a tap for the VM. ``nic`` is None when the namespace has no veth."""

    def __init__(self, path: str, ns_fd: int) -> None:
        self.path = path
        self._ns_fd = ns_fd
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="podnet", initializer=_join_netns,
                                          initargs=(ns_fd,))
        self._ipr: Any = None
        self.endpoint: Endpoint | None = None
        self._tap_fd = -1
        self._tap_index = 0
        self.closed = False

    @classmethod
    async def connect(cls, path: str) -> PodNetwork:
        net = cls(path, open_netns(path))
        try:
            await net._run(net._setup)
        except BaseException:
            await net.close()
            raise
        return net

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except (OSError, BrokenExecutor) as e:
            raise FailedPreconditionError(f"pod network {self.path}: {e}") from None

    @property
    def nic(self) -> Nic | None:
        if self.endpoint is None or self._tap_fd < 0:
            return None
        return Nic(self._tap_fd, self.endpoint.mac)

    # -- setup (on the namespace's thread) ----------------------------------------------------------

    def _setup(self) -> None:
        from pyroute2 import IPRoute

        self._ipr = IPRoute()
        endpoint = self._read_endpoint()
        if endpoint is None:
            log.info("event=pod_network_empty netns=%s", self.path)
            return
        if self._ipr.link_lookup(ifname=TAP_NAME):
            raise FailedPreconditionError(f"pod network {self.path}: {TAP_NAME} exists already")
        tun = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            ifreq = struct.pack("16sH22x", TAP_NAME.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            fcntl.ioctl(tun, TUNSETIFF, ifreq)
        except OSError:
            os.close(tun)
            raise
        self._tap_fd = tun
        self.endpoint = endpoint
        self._tap_index = int(self._ipr.link_lookup(ifname=TAP_NAME)[0])
        self._ipr.link("set", index=self._tap_index, mtu=endpoint.mtu)
        self._ipr.link("set", index=self._tap_index, state="up")
        # Kata's order: both ingress qdiscs, then veth → tap and tap → veth.
        for index in (self._tap_index, endpoint.index):
            self._ipr.tc("add", "ingress", index=index)
        for src, dst in ((endpoint.index, self._tap_index), (self._tap_index, endpoint.index)):
            self._ipr.tc(
                "add-filter",
                "u32",
                index=src,
                parent=INGRESS_PARENT,
                protocol=ETH_P_ALL,
                target=0,
                keys=["0x0/0x0+0"],
                action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": dst},
            )
        log.info(
            "event=pod_network_connected netns=%s veth=%s mac=%s mtu=%d addresses=%d routes=%d",
            self.path, endpoint.name, endpoint.mac, endpoint.mtu, len(endpoint.addresses),
            len(endpoint.routes),
        )

    def _read_endpoint(self) -> Endpoint | None:
        veths = []
        for link in self._ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if kind == "veth":
                veths.append(link)
        if not veths:
            return None
        if len(veths) > 1:
            names = sorted(str(v.get_attr("IFLA_IFNAME")) for v in veths)
            raise InvalidInputError("pod network interfaces", names, "one veth (more are not supported)")
        link = veths[0]
        index = int(link["index"])
        name = str(link.get_attr("IFLA_IFNAME"))
        if not _IFNAME.fullmatch(name):
            raise InvalidInputError("pod network interface name", name, "1-15 of [A-Za-z0-9_.-]")
        mac = str(link.get_attr("IFLA_ADDRESS") or "").lower()
        if not _MAC.fullmatch(mac):
            raise InvalidInputError(f"MAC address of {name}", mac, "aa:bb:cc:dd:ee:ff")
        mtu = int(link.get_attr("IFLA_MTU") or 0)
        if not 68 <= mtu <= 65535:
            raise InvalidInputError(f"MTU of {name}", mtu, "68..65535")
        addresses = []
        for a in self._ipr.get_addr(index=index):
            ip = ipaddress.ip_address(_checked_ip(f"address of {name}", a.get_attr("IFA_ADDRESS")))
            if ip.is_loopback:
                continue
            addresses.append(types_pb2.IPAddress(family=_family(a["family"]), address=str(ip),
                                                 mask=str(int(a["prefixlen"]))))
        routes, gateways = [], set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in self._ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                if r.get_attr("RTA_OIF") != index or r["proto"] == RTPROT_KERNEL:
                    continue
                dst = r.get_attr("RTA_DST")
                route = types_pb2.Route(
                    dest=f"{_checked_ip('route destination', dst)}/{int(r['dst_len'])}" if dst else "",
                    device=name,
                    scope=int(r["scope"]),
                    family=_family(family),
                    flags=int(r["flags"]) & RTNH_F_ONLINK,
                )
                gw = r.get_attr("RTA_GATEWAY")
                if gw:
                    route.gateway = _checked_ip("route gateway", gw)
                    gateways.add(route.gateway)
                src = r.get_attr("RTA_PREFSRC")
                if src:
                    route.source = _checked_ip("route source", src)
                routes.append(route)
        neighbors = []
        for n in self._ipr.get_neighbours(ifindex=index):
            lladdr = str(n.get_attr("NDA_LLADDR") or "").lower()
            dst = n.get_attr("NDA_DST")
            if not _MAC.fullmatch(lladdr) or not dst:
                continue
            to = _checked_ip("neighbour", dst)
            state = int(n["state"])
            if state == NUD_PERMANENT or (state == NUD_REACHABLE and to in gateways):
                neighbors.append(types_pb2.ARPNeighbor(
                    toIPAddress=types_pb2.IPAddress(family=_family(n["family"]), address=to),
                    device=name, lladdr=lladdr, state=state, flags=int(n["flags"])))
        return Endpoint(name, index, mac, mtu, bool(int(link["flags"]) & IFF_NOARP), tuple(addresses),
                        tuple(routes), tuple(neighbors))

    # -- the guest ------------------------------------------------------------------------------------

    def interface(self) -> types_pb2.Interface:
        ep = self.endpoint
        assert ep is not None
        return types_pb2.Interface(device=ep.name, name=ep.name, IPAddresses=list(ep.addresses), mtu=ep.mtu,
                                   hwAddr=ep.mac, type="virtual", raw_flags=IFF_NOARP if ep.noarp else 0)

    async def configure_guest(self, agent: AgentClient) -> None:
        """UpdateInterface, UpdateRoutes, AddARPNeighbors with Kata's retry and tolerance rules."""
        ep = self.endpoint
        if ep is None:
            return
        request = agent_pb2.UpdateInterfaceRequest(interface=self.interface())
        for attempt in range(UPDATE_INTERFACE_RETRIES):
            try:
                await agent.call("UpdateInterface", request, types_pb2.Interface)
                break
            except TtrpcError as e:
                if "Link not found" not in e.status.message or attempt == UPDATE_INTERFACE_RETRIES - 1:
                    raise
                await asyncio.sleep(UPDATE_INTERFACE_DELAY)
        if ep.routes:
            await agent.call("UpdateRoutes", agent_pb2.UpdateRoutesRequest(
                routes=agent_pb2.Routes(Routes=list(ep.routes))), agent_pb2.Routes)
        if ep.neighbors:
            try:
                await agent.call("AddARPNeighbors", agent_pb2.AddARPNeighborsRequest(
                    neighbors=agent_pb2.ARPNeighbors(ARPNeighbors=list(ep.neighbors))), empty_pb2.Empty)
            except TtrpcError as e:
                if e.code != Code.UNIMPLEMENTED:
                    raise
                log.info("event=arp_neighbors_unimplemented")

    def release_tap(self) -> None:
        """QEMU holds the tap now: close the shim's copy, so the tap ends with QEMU."""
        if self._tap_fd >= 0:
            os.close(self._tap_fd)
            self._tap_fd = -1

    # -- teardown -------------------------------------------------------------------------------------

    def _teardown(self) -> None:
        ipr = self._ipr
        if ipr is None:
            return
        ep = self.endpoint
        indices = [i for i in (self._tap_index, ep.index if ep else 0) if i]
        for index in indices:
            # Deleting the ingress qdisc deletes its filters.
            with contextlib.suppress(Exception):
                ipr.tc("del", "ingress", index=index)
        if self._tap_fd >= 0:
            os.close(self._tap_fd)
            self._tap_fd = -1
        if self._tap_index:
            with contextlib.suppress(Exception):
                if ipr.link_lookup(ifname=TAP_NAME):
                    ipr.link("del", index=self._tap_index)
        ipr.close()
        self._ipr = None

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._teardown)
        except Exception as e:
            log.warning("event=pod_network_teardown_failed netns=%s error=%r", self.path, e)
        finally:
            self._thread.shutdown(wait=True)
            os.close(self._ns_fd)
        log.info("event=pod_network_closed netns=%s", self.path)
