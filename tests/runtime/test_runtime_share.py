"""CopyFile of bind mounts (runtime/share.py) against a hostile host's trees: an over-budget
container fails with a clear error before anything is copied into the guest."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from guest.protocols import oci_pb2
from runtime.errors import InvalidInputError
from runtime.share import MAX_SHARED_BYTES, share_bind_mounts


def _spec(*sources: Path) -> oci_pb2.Spec:
    spec = oci_pb2.Spec()
    for i, source in enumerate(sources):
        spec.Mounts.add(destination=f"/m{i}", type="bind", source=str(source), options=["rbind"])
    return spec


def test_over_budget_container_copies_nothing(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "f").write_text("fits")
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(MAX_SHARED_BYTES + 1)  # sparse: costs no disk
    calls: list[Any] = []

    async def call(method: str, request: Any, reply: Any) -> None:
        calls.append((method, request.path))

    spec = _spec(small, big)
    with pytest.raises(InvalidInputError, match=r"bind mount source.*at most"):
        asyncio.run(share_bind_mounts(call, "c" * 64, spec))
    assert calls == []  # the small mount before the big one was not copied either
    assert [m.source for m in spec.Mounts] == [str(small), str(big)]  # the spec is unchanged


def test_deep_tree_is_walked_without_recursion(tmp_path: Path) -> None:
    path = tmp_path / "deep"
    path.mkdir()
    deepest = path
    calls: list[Any] = []

    async def call(method: str, request: Any, reply: Any) -> None:
        calls.append(request.path)

    spec = _spec(path)
    try:
        for _ in range(1200):  # deeper than Python's recursion limit
            deepest = deepest / "d"
            os.mkdir(deepest)
        asyncio.run(share_bind_mounts(call, "c" * 64, spec))
    finally:
        # shutil.rmtree (pytest's tmp_path cleanup) recurses too: remove the levels bottom-up here.
        while deepest != path:
            os.rmdir(deepest)
            deepest = deepest.parent
    assert len(calls) == 1201
    assert calls[0] == spec.Mounts[0].source and calls[-1].endswith("/d" * 1200)
