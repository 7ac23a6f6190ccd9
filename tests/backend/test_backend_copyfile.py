"""CopyFile: kata-agent's semantics, and the host's attempts to write outside the shared tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from guest.backend.copyfile import copy_file
from guest.backend.errors import InvalidRequestError
from guest.backend.layout import Layout
from guest.protocols import agent_pb2

BASE = "/run/kata-containers/shared/containers"
DIR_MODE = 0x800001E8  # Go's os.FileMode(0750)|os.ModeDir, as the runtime sends it


def req(path: str, *, mode: int = 0o100644, data: bytes = b"", size: int | None = None, offset: int = 0,
        uid: int = 0, gid: int = 0) -> agent_pb2.CopyFileRequest:
    return agent_pb2.CopyFileRequest(path=path, file_mode=mode, dir_mode=DIR_MODE, uid=uid, gid=gid,
                                     offset=offset, data=data,
                                     file_size=len(data) if size is None else size)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def test_regular_file_in_chunks_appears_only_when_complete(layout: Layout) -> None:
    path = f"{BASE}/abc-0123456789abcdef-hosts"
    copy_file(layout, req(path, data=b"127.0.0.1 ", size=20))
    target = layout.shared / "abc-0123456789abcdef-hosts"
    assert not target.exists()  # nothing partial under the final name
    copy_file(layout, req(path, data=b"localhost\n", size=20, offset=10, mode=0o100640))
    assert target.read_bytes() == b"127.0.0.1 localhost\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not (layout.shared / "abc-0123456789abcdef-hosts.tmp").exists()


def test_empty_file_directory_and_symlink(layout: Layout) -> None:
    copy_file(layout, req(f"{BASE}/c-1-token/..2026/ca.crt", data=b""))
    assert (layout.shared / "c-1-token/..2026/ca.crt").read_bytes() == b""
    assert stat.S_IMODE((layout.shared / "c-1-token").stat().st_mode) == 0o750  # dir_mode, masked
    copy_file(layout, req(f"{BASE}/c-1-token", mode=0o40755))
    assert stat.S_IMODE((layout.shared / "c-1-token").stat().st_mode) == 0o755
    copy_file(layout, req(f"{BASE}/c-1-token/..data", mode=0o120777, data=b"..2026"))
    assert os.readlink(layout.shared / "c-1-token/..data") == "..2026"
    copy_file(layout, req(f"{BASE}/c-1-token/..data", mode=0o120777, data=b"..2027"))  # replaced
    assert os.readlink(layout.shared / "c-1-token/..data") == "..2027"


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "/run/kata-containers/shared/containersX/a",
    f"{BASE}/../../../etc/shadow",
    f"{BASE}/a/./b",
    f"{BASE}//a",
    f"{BASE}/",
    f"{BASE}/a/",
])
def test_paths_outside_or_not_normalised_are_refused(layout: Layout, path: str) -> None:
    with pytest.raises(InvalidRequestError, match="path"):
        copy_file(layout, req(path, data=b"x"))
    assert not any(layout.root.rglob("*shadow*")) and not any(layout.root.rglob("passwd"))


def test_planted_symlink_cannot_redirect_a_later_copy(layout: Layout, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    copy_file(layout, req(f"{BASE}/evil", mode=0o120777, data=str(outside).encode()))
    with pytest.raises(InvalidRequestError, match="not a symlink"):
        copy_file(layout, req(f"{BASE}/evil/x", data=b"owned"))
    assert list(outside.iterdir()) == []
    # and a symlink where the temp file goes is not followed either
    copy_file(layout, req(f"{BASE}/f.tmp", mode=0o120777, data=str(outside / "y").encode()))
    copy_file(layout, req(f"{BASE}/f", data=b"ok"))
    assert (layout.shared / "f").read_bytes() == b"ok" and list(outside.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"data": b"abc", "size": 2}, "offset"),                 # more data than file_size
    ({"data": b"abc", "size": 10, "offset": 4}, "offset"),   # first chunk not at 0
    ({"data": b"abc", "size": -1}, "file_size"),
    ({"data": b"", "mode": 0o10644}, "file_mode"),          # a fifo
    ({"data": b"", "mode": 0o20644}, "file_mode"),          # a character device
    ({"data": b"", "mode": 0o120777}, "data"),               # symlink without target
    ({"data": b"x", "uid": -5}, "uid"),
])
def test_malformed_requests_change_nothing(layout: Layout, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        copy_file(layout, req(f"{BASE}/x", **kwargs))  # type: ignore[arg-type]
    assert not (layout.shared / "x").exists() and not (layout.shared / "x.tmp").exists()


def test_chunks_out_of_order_are_refused(layout: Layout) -> None:
    copy_file(layout, req(f"{BASE}/big", data=b"a" * 10, size=30))
    with pytest.raises(InvalidRequestError, match="offset"):
        copy_file(layout, req(f"{BASE}/big", data=b"c" * 10, size=30, offset=20))
    copy_file(layout, req(f"{BASE}/big", data=b"b" * 10, size=30, offset=10))
    copy_file(layout, req(f"{BASE}/big", data=b"c" * 10, size=30, offset=20))
    assert (layout.shared / "big").read_bytes() == b"a" * 10 + b"b" * 10 + b"c" * 10


def test_a_host_planted_setuid_program_loses_its_setuid_and_setgid_bits(layout: Layout) -> None:
    path = f"{BASE}/abc-0123456789abcdef-bin/sh"
    copy_file(layout, req(path, mode=0o106755, data=b"#!/bin/sh\nid\n"))
    target = layout.shared / "abc-0123456789abcdef-bin" / "sh"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    copy_file(layout, req(f"{BASE}/abc-0123456789abcdef-dir", mode=0o42775))  # a setgid directory stays
    assert stat.S_IMODE((layout.shared / "abc-0123456789abcdef-dir").stat().st_mode) == 0o2775
