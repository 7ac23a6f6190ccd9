"""The regorus module, imported with library backtraces off.

regorus reports errors through `anyhow`, which captures a stack backtrace into every error when
RUST_BACKTRACE=1 is set (as in many dev and CI shells): slow on the "rule not defined" path and
hundreds of lines of noise in INTERNAL replies to the host. RUST_LIB_BACKTRACE=0 turns off library
backtraces only (panics still print theirs). It must be set before regorus creates its first error.
"""

from __future__ import annotations

import os
import threading
from typing import Any

os.environ["RUST_LIB_BACKTRACE"] = "0"

import regorus

__all__ = ["ThreadBound", "regorus", "release_orphans"]


class ThreadBound:
    """Holds a regorus engine and makes sure it is released on the thread that created it.

    regorus's engines are unsendable native objects: dropping one on another thread fails ("Engine is
    unsendable, but is being dropped on another thread") and leaks it. The last reference to an engine
    can end up on any thread, because the cycle collector runs wherever an allocation triggers it (an
    AgentPolicy caught in a reference cycle, e.g. through a traceback, is freed by whichever thread
    collects). So an engine released off its thread is parked for its owner, which drops it at its
    next ``release_orphans`` call; an owner that has exited keeps it parked (the engine cannot be freed
    anywhere else).
    """

    __slots__ = ("_owner", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._owner = threading.current_thread()

    def __del__(self) -> None:
        if threading.current_thread() is not self._owner:
            with _orphans_lock:
                _orphans.setdefault(self._owner, []).append(self.value)


_orphans: dict[threading.Thread, list[Any]] = {}
_orphans_lock = threading.Lock()


def release_orphans() -> None:
    """Drop the engines of this thread that other threads let go of."""
    if not _orphans:  # the common case, no lock taken
        return
    with _orphans_lock:
        mine = _orphans.pop(threading.current_thread(), None)
    del mine  # released here, on the owning thread
