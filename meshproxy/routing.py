"""Policy routing for marked TPROXY packets (optional; Contrast's rules need none).

TPROXY to a local destination works without routing changes. When packets for non-local destinations are
steered (``--tproxy-mark``), the kernel must deliver them locally: ``ip rule fwmark M lookup T`` plus
``ip route add local 0.0.0.0/0 dev lo table T``, and the same with ``ip -6`` and ``::/0`` for IPv6. Done with
pyroute2 (netlink), idempotent and removable.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshproxy.errors import RoutingError
from meshproxy.netfilter import ipv6_in_kernel

_T = TypeVar("_T")

DEFAULT_TABLE = 0x15006 & 0xFFFF  # a fixed table id of our own (20486)
_PRIORITY = 1006
_SCOPE_HOST = 254  # local routes must have host scope (EINVAL otherwise)
#: (netlink family, the "everything" prefix) of each family the rules cover.
_FAMILIES = ((socket.AF_INET, "0.0.0.0/0"), (socket.AF_INET6, "::/0"))


def _families() -> tuple[tuple[socket.AddressFamily, str], ...]:
    # Both families, as the TPROXY rules (netfilter.py): marked IPv6 packets need their own rule and route.
    return _FAMILIES if ipv6_in_kernel() else _FAMILIES[:1]


def _off_loop(work: Callable[[], _T]) -> _T:
    # pyroute2's synchronous IPRoute runs an asyncio loop of its own, which cannot start inside the proxy's
    # running loop ("This event loop is already running"): from a coroutine, do the netlink work in a thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshproxy-routing") as pool:
        return pool.submit(work).result()


def install_local_route(mark: int, table: int = DEFAULT_TABLE) -> None:
    _off_loop(lambda: _install(mark, table))


def remove_local_route(mark: int, table: int = DEFAULT_TABLE) -> None:
    _off_loop(lambda: _remove(mark, table))


def has_local_route(mark: int, table: int = DEFAULT_TABLE) -> bool:
    """True when the fwmark rule exists in any family (a half-installed state counts as present)."""
    return _off_loop(lambda: _has(mark, table))


def _local_route(ipr: IPRoute, op: str, family: socket.AddressFamily, everything: str, table: int) -> None:
    """``ip route <op> local <everything> dev lo table <table>``: marked packets are delivered locally."""
    ipr.route(op, family=family, dst=everything, type="local", scope=_SCOPE_HOST,
              oif=ipr.link_lookup(ifname="lo")[0], table=table)


def _install(mark: int, table: int) -> None:
    with IPRoute() as ipr:
        for family, everything in _families():
            try:
                if not ipr.get_rules(family=family, fwmark=mark, table=table):
                    ipr.rule("add", family=family, fwmark=mark, fwmask=mark, table=table, priority=_PRIORITY)
                _local_route(ipr, "replace", family, everything, table)
            except NetlinkError as exc:
                raise RoutingError(
                    f"installing fwmark {mark:#x} -> local table {table} ({family.name}): {exc}"
                ) from None


def _remove(mark: int, table: int) -> None:
    with IPRoute() as ipr:
        for family, everything in _families():
            try:
                for _ in ipr.get_rules(family=family, fwmark=mark, table=table):
                    ipr.rule("del", family=family, fwmark=mark, fwmask=mark, table=table, priority=_PRIORITY)
                _local_route(ipr, "del", family, everything, table)
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ESRCH):
                    raise RoutingError(
                        f"removing fwmark {mark:#x} -> local table {table} ({family.name}): {exc}"
                    ) from None


def _has(mark: int, table: int) -> bool:
    with IPRoute() as ipr:
        return any(ipr.get_rules(family=family, fwmark=mark, table=table) for family, _ in _families())
