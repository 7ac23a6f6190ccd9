"""cgroup v2: a container's statistics and its OOM kills (``memory.events``).

Stats follow kata-agent's mapping of cgroup v2 files onto the v1-shaped ``CgroupStats`` message:
cpu.stat usage_usec/user_usec/system_usec (× 1000 → ns), throttling; memory.current / memory.max /
memory.stat; pids.current / pids.max; io.stat rbytes/wbytes/rios/wios. Network counters of the VM's
interfaces (containers share its network namespace) come from psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from guest.protocols import agent_pb2

__all__ = ["OomWatcher", "cgroup_stats", "network_stats", "oom_kills"]

log = logging.getLogger("guest.backend")


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _int(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def cgroup_stats(cgroup: Path) -> agent_pb2.CgroupStats:
    stats = agent_pb2.CgroupStats()
    cpu = _kv(cgroup / "cpu.stat")
    usage = stats.cpu_stats.cpu_usage
    usage.total_usage = cpu.get("usage_usec", 0) * 1000
    usage.usage_in_usermode = cpu.get("user_usec", 0) * 1000
    usage.usage_in_kernelmode = cpu.get("system_usec", 0) * 1000
    thr = stats.cpu_stats.throttling_data
    thr.periods = cpu.get("nr_periods", 0)
    thr.throttled_periods = cpu.get("nr_throttled", 0)
    thr.throttled_time = cpu.get("throttled_usec", 0) * 1000
    mem = stats.memory_stats
    mem.usage.usage = _int(cgroup / "memory.current")
    mem.usage.max_usage = _int(cgroup / "memory.peak")
    mem.usage.limit = _int(cgroup / "memory.max")  # "max" (no limit) reads as 0
    mem.usage.failcnt = _kv(cgroup / "memory.events").get("max", 0)
    mem.swap_usage.usage = _int(cgroup / "memory.swap.current")
    mem.use_hierarchy = True
    for key, value in _kv(cgroup / "memory.stat").items():
        mem.stats[key] = max(value, 0)
    mem.cache = mem.stats.get("file", 0)
    stats.pids_stats.current = _int(cgroup / "pids.current")
    stats.pids_stats.limit = _int(cgroup / "pids.max")
    try:
        io_lines = (cgroup / "io.stat").read_text().splitlines()
    except OSError:
        io_lines = []
    for line in io_lines:
        dev, *fields = line.split()
        major, _, minor = dev.partition(":")
        values = dict(f.split("=", 1) for f in fields if "=" in f)
        for op, key, target in (("Read", "rbytes", stats.blkio_stats.io_service_bytes_recursive),
                                ("Write", "wbytes", stats.blkio_stats.io_service_bytes_recursive),
                                ("Read", "rios", stats.blkio_stats.io_serviced_recursive),
                                ("Write", "wios", stats.blkio_stats.io_serviced_recursive)):
            with contextlib.suppress(ValueError):
                target.add(major=int(major), minor=int(minor), op=op, value=int(values.get(key, "0")))
    return stats


def network_stats() -> list[agent_pb2.NetworkStats]:
    import psutil

    out = []
    for name, c in sorted(psutil.net_io_counters(pernic=True).items()):
        if name == "lo":
            continue
        out.append(agent_pb2.NetworkStats(
            name=name, rx_bytes=c.bytes_recv, rx_packets=c.packets_recv, rx_errors=c.errin,
            rx_dropped=c.dropin, tx_bytes=c.bytes_sent, tx_packets=c.packets_sent, tx_errors=c.errout,
            tx_dropped=c.dropout))
    return out


def oom_kills(cgroup: Path) -> int:
    return _kv(cgroup / "memory.events").get("oom_kill", 0)


class OomWatcher:
    """Polls ``memory.events`` of the watched cgroups; a rising ``oom_kill`` queues the container id.

    GetOOMEvent waits on :meth:`next`; :meth:`close` wakes every waiter with an error (DestroySandbox).
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._watched: dict[str, tuple[Path, int]] = {}
        self._events: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def watch(self, container_id: str, cgroup: Path) -> None:
        self._watched[container_id] = (cgroup, oom_kills(cgroup))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    def unwatch(self, container_id: str, final_check: bool = True) -> None:
        entry = self._watched.pop(container_id, None)
        if entry is not None and final_check and oom_kills(entry[0]) > entry[1]:
            self._events.put_nowait(container_id)

    def _check(self, on_event: Callable[[str], None]) -> None:
        for cid, (cgroup, seen) in list(self._watched.items()):
            now = oom_kills(cgroup)
            if now > seen:
                self._watched[cid] = (cgroup, now)
                on_event(cid)

    async def _poll(self) -> None:
        while not self.closed:
            self._check(self._events.put_nowait)
            await asyncio.sleep(self.interval)

    async def next(self) -> str:
        if self.closed:
            raise EOFError("the OOM event channel is closed")
        item = await self._events.get()
        if item is None:
            self._events.put_nowait(None)  # wake the next waiter too
            raise EOFError("the OOM event channel is closed")
        return item

    def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        self._events.put_nowait(None)
