"""A policy engine collected on another thread is released on its own thread, never dropped off it.

The flake this guards against: an AgentPolicy caught in a reference cycle (a traceback, a test's
``pytest.raises`` frame) is freed by whichever thread runs the cycle collector; regorus then reported
"Engine is unsendable, but is being dropped on another thread" as an unraisable error in an unrelated
test (seen in test_kill_9_during_set_manifest, whose worker thread triggered the collection).
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from guest.policy import AgentPolicy, _regorus


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    caught: list[str] = []

    def hook(info: Any) -> None:
        caught.append(repr(info.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # only the collections this test runs
    try:
        yield caught
    finally:
        if was_enabled:
            gc.enable()


def _collect_on_another_thread() -> None:
    t = threading.Thread(target=gc.collect)
    t.start()
    t.join(timeout=60)


def test_cycle_collected_off_thread_parks_the_engine(unraisable: list[str]) -> None:
    policy = AgentPolicy()
    policy.set_policy("package agent_policy\n\ndefault CreateContainerRequest := true\n")
    policy.cycle = policy  # type: ignore[attr-defined]  # unreachable once the name is gone
    del policy
    _collect_on_another_thread()
    assert unraisable == []
    assert any(_regorus._orphans.get(threading.current_thread(), []))
    _regorus.release_orphans()  # what the next engine use on this thread does
    assert threading.current_thread() not in _regorus._orphans
    assert unraisable == []


def test_next_engine_use_releases_parked_engines(unraisable: list[str]) -> None:
    doomed = AgentPolicy()
    doomed.cycle = doomed  # type: ignore[attr-defined]
    del doomed
    _collect_on_another_thread()
    survivor = AgentPolicy()
    survivor.set_policy("package agent_policy\n\ndefault CreateContainerRequest := true\n")
    assert survivor.evaluate("CreateContainerRequest", {}).allowed
    assert threading.current_thread() not in _regorus._orphans
    assert unraisable == []


def test_engine_released_on_its_thread_is_dropped_at_once(unraisable: list[str]) -> None:
    policy = AgentPolicy()
    policy.cycle = policy  # type: ignore[attr-defined]
    del policy
    gc.collect()  # same thread: nothing is parked
    assert threading.current_thread() not in _regorus._orphans
    assert unraisable == []
