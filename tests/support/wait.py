"""Polling with a deadline: wait for a state instead of sleeping and hoping it was reached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEFAULT_TIMEOUT = 30.0  # generous: the CI machine is shared and QEMU runs without KVM


async def until(
    predicate: Callable[[], object], *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - a deadline for the polled state, not a call
    what: str = "",
) -> None:
    """Return as soon as ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.002)


def wait_until(predicate: Callable[[], object], *, timeout: float = DEFAULT_TIMEOUT, what: str = "") -> None:
    """:func:`until` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.005)
