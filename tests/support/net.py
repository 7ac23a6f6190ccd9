"""Loopback ports for servers a test starts; scratch network namespaces and code run inside one."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the caller binds it soon; another process may race it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def scratch_netns(tag: str) -> Iterator[Path]:
    """A new named network namespace (``ip netns add``, the pid in its name); its path. Root only."""
    name = f"cg{tag}{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def in_netns(netns: Path, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread that joined ``netns`` (setns moves only the calling thread)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=run, name="in-netns")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
