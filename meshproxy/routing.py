"""Policy routing for marked TPROXY packets (optional; Contrast's rules need none).

TPROXY to a local destination works without routing changes. When packets for non-local destinations are
steered (``--tproxy-mark``), the kernel must deliver them locally: ``ip rule fwmark M lookup T`` plus
``ip route add local 0.0.0.0/0 dev lo table T``. Done with pyroute2 (netlink), idempotent and removable.
"""

from __future__ import annotations

import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshproxy.errors import RoutingError

DEFAULT_TABLE = 0x15006 & 0xFFFF  # a fixed table id of our own (20486)
_PRIORITY = 1006
_SCOPE_HOST = 254  # local routes must have host scope (EINVAL otherwise)


def install_local_route(mark: int, table: int = DEFAULT_TABLE) -> None:
    with IPRoute() as ipr:
        try:
            if not ipr.get_rules(family=2, fwmark=mark, table=table):
                ipr.rule("add", family=2, fwmark=mark, fwmask=mark, table=table, priority=_PRIORITY)
            ipr.route(
                "replace",
                dst="0.0.0.0/0",
                type="local",
                scope=_SCOPE_HOST,
                oif=ipr.link_lookup(ifname="lo")[0],
                table=table,
            )
        except NetlinkError as exc:
            raise RoutingError(f"installing fwmark {mark:#x} -> local table {table}: {exc}") from None


def remove_local_route(mark: int, table: int = DEFAULT_TABLE) -> None:
    with IPRoute() as ipr:
        try:
            for _ in ipr.get_rules(family=2, fwmark=mark, table=table):
                ipr.rule("del", family=2, fwmark=mark, fwmask=mark, table=table, priority=_PRIORITY)
            ipr.route(
                "del",
                dst="0.0.0.0/0",
                type="local",
                scope=_SCOPE_HOST,
                oif=ipr.link_lookup(ifname="lo")[0],
                table=table,
            )
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise RoutingError(f"removing fwmark {mark:#x} -> local table {table}: {exc}") from None


def has_local_route(mark: int, table: int = DEFAULT_TABLE) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.get_rules(family=2, fwmark=mark, table=table))
