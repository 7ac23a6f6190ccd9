"""UpdateContainer: a running container's cgroup v2 limits from the request's ``LinuxResources``.

The same resources CreateContainer keeps (memory, CPU, pids) are mapped onto cgroup v2 files the way
runc/crun and kata-agent's cgroup manager map them (memory.max, memory.low, memory.swap.max =
swap − limit, cpu.weight from shares, cpu.max "quota period", pids.max); what CreateContainer drops
(devices, block I/O, hugepages, network classes, cpusets) is dropped here too. Every field is
checked before any file is written: a value outside what the kernel or the runtime spec accepts is
refused naming the field, with nothing changed. If the kernel refuses a write half-way, the files
already written get their previous values back.
"""

from __future__ import annotations

import logging
from pathlib import Path

from guest.protocols import oci_pb2

from .errors import AgentError, InvalidRequestError

__all__ = ["MAX_CPU_QUOTA_USEC", "apply_update", "plan_update"]

log = logging.getLogger("guest.backend")

UNLIMITED = -1
MIN_MEMORY = 1 << 20  # below this no process starts; a smaller limit is a mistake or an attack
MAX_INT64 = (1 << 63) - 1
CPU_PERIOD_USEC = (1000, 1_000_000)  # the kernel's bounds for cpu.max's period
MAX_CPU_QUOTA_USEC = (1 << 44) - 1  # the kernel's largest CFS quota
CPU_SHARES = (2, 262144)  # cgroup v1 cpu.shares range, as the runtime spec uses it


def _limit(field: str, value: int, minimum: int = MIN_MEMORY) -> str | None:
    """0 = leave as is, -1 = unlimited ("max"), else a byte count ≥ ``minimum``."""
    if value == 0:
        return None
    if value == UNLIMITED:
        return "max"
    if not minimum <= value <= MAX_INT64:
        raise InvalidRequestError(field, value, f"-1 (unlimited), 0 (unchanged) or {minimum}..{MAX_INT64}")
    return str(value)


def _weight(shares: int) -> int:
    """cpu.shares → cpu.weight (runc's and crun's conversion: 2..262144 onto 1..10000)."""
    return 1 + ((shares - 2) * 9999) // 262142


def plan_update(r: oci_pb2.LinuxResources) -> list[tuple[str, str]]:
    """(cgroup file, value) pairs for ``r``, every field validated; nothing is touched here."""
    plan: list[tuple[str, str]] = []
    if r.HasField("Memory"):
        m = r.Memory
        limit = _limit("resources.Memory.Limit", m.Limit)
        if limit is not None:
            plan.append(("memory.max", limit))
        low = _limit("resources.Memory.Reservation", m.Reservation, minimum=1)
        if low is not None:
            plan.append(("memory.low", low))
        if m.Swap:
            if m.Swap == UNLIMITED:
                plan.append(("memory.swap.max", "max"))
            elif m.Limit <= 0 or not m.Limit <= m.Swap <= MAX_INT64:
                raise InvalidRequestError("resources.Memory.Swap", m.Swap,
                                          "-1, or memory+swap ≥ a positive Memory.Limit")
            else:
                plan.append(("memory.swap.max", str(m.Swap - m.Limit)))
        if m.Swappiness > 100:
            raise InvalidRequestError("resources.Memory.Swappiness", m.Swappiness, "0..100")
        if m.Kernel or m.KernelTCP:
            raise InvalidRequestError("resources.Memory.Kernel", m.Kernel or m.KernelTCP,
                                      "0 (kernel memory limits do not exist in cgroup v2)")
    if r.HasField("CPU"):
        c = r.CPU
        if c.Shares:
            if not CPU_SHARES[0] <= c.Shares <= CPU_SHARES[1]:
                raise InvalidRequestError("resources.CPU.Shares", c.Shares,
                                          f"{CPU_SHARES[0]}..{CPU_SHARES[1]}")
            plan.append(("cpu.weight", str(_weight(c.Shares))))
        if c.Period and not CPU_PERIOD_USEC[0] <= c.Period <= CPU_PERIOD_USEC[1]:
            raise InvalidRequestError("resources.CPU.Period", c.Period,
                                      f"{CPU_PERIOD_USEC[0]}..{CPU_PERIOD_USEC[1]} µs")
        if c.Quota:
            if c.Quota != UNLIMITED and not 1000 <= c.Quota <= MAX_CPU_QUOTA_USEC:
                raise InvalidRequestError("resources.CPU.Quota", c.Quota,
                                          f"-1 or 1000..{MAX_CPU_QUOTA_USEC} µs")
            quota = "max" if c.Quota == UNLIMITED else str(c.Quota)
            plan.append(("cpu.max", f"{quota} {c.Period or 100000}"))
        elif c.Period:
            raise InvalidRequestError("resources.CPU.Period", c.Period,
                                      "a Quota with it (cpu.max takes both)")
        if c.RealtimeRuntime or c.RealtimePeriod:
            raise InvalidRequestError("resources.CPU.RealtimeRuntime", c.RealtimeRuntime or c.RealtimePeriod,
                                      "0 (no real-time scheduling for containers)")
        if c.Cpus or c.Mems:
            log.info("event=update_dropped field=cpuset msg=%r", "cpusets are not applied in the pod VM")
    if r.HasField("Pids") and r.Pids.Limit:
        if r.Pids.Limit < UNLIMITED:
            raise InvalidRequestError("resources.Pids.Limit", r.Pids.Limit,
                                      "-1 (unlimited), 0 or a count ≥ 1")
        plan.append(("pids.max", "max" if r.Pids.Limit == UNLIMITED else str(r.Pids.Limit)))
    return plan


def apply_update(cgroup: Path, plan: list[tuple[str, str]]) -> None:
    """Write ``plan`` into ``cgroup``; on a refused write, restore what was written before it."""
    if not cgroup.is_dir():
        raise AgentError(f"cgroup {cgroup} of the container does not exist")
    done: list[tuple[Path, str]] = []
    for name, value in plan:
        path = cgroup / name
        try:
            old = path.read_text().strip()
            path.write_text(value)
        except OSError as e:
            for undo, previous in reversed(done):
                try:
                    undo.write_text(previous)
                except OSError as again:
                    log.error("event=update_restore_failed file=%s error=%r", undo, str(again))
            raise AgentError(f"UpdateContainer: {name} = {value}: {e.strerror or e}") from e
        done.append((path, old))
    log.info("event=container_updated cgroup=%s files=%s", cgroup, ",".join(n for n, _ in plan))
