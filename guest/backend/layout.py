"""Where the agent keeps things in the guest, and the checks on ids that become path names.

Every directory hangs off one root (``/`` in the VM, a temp dir in host tests), so no host-supplied
string is ever joined to a path before it passed :func:`check_id`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidRequestError

__all__ = ["Layout", "check_id"]

# kata-agent's verify_id: alphanumeric start, then alphanumerics and "_.-"; bounded length.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_id(field: str, value: str) -> str:
    if not _ID.fullmatch(value) or ".." in value:
        raise InvalidRequestError(field, value, "1-128 characters [A-Za-z0-9_.-], starting alphanumeric")
    return value


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path = Path("/")

    @property
    def kata_run(self) -> Path:
        return self.root / "run/kata-containers"

    @property
    def shared(self) -> Path:
        """CopyFile's only allowed destination tree."""
        return self.kata_run / "shared/containers"

    @property
    def sandbox(self) -> Path:
        return self.kata_run / "sandbox"

    @property
    def shm(self) -> Path:
        return self.sandbox / "shm"

    @property
    def sandbox_ns(self) -> Path:
        return self.root / "run/sandbox-ns"

    @property
    def resolv_conf(self) -> Path:
        return self.sandbox / "resolv.conf"

    @property
    def image_cache(self) -> Path:
        return self.root / "run/kata-containers/image-cache"

    @property
    def cgroup_root(self) -> Path:
        return self.root / "sys/fs/cgroup"

    def bundle(self, container_id: str) -> Path:
        return self.kata_run / check_id("container_id", container_id)

    def rootfs(self, container_id: str) -> Path:
        return self.bundle(container_id) / "rootfs"

    def cgroup(self, container_id: str) -> str:
        """The container's cgroup (cgroupfs form, relative to the cgroup v2 root)."""
        return f"/kata/{check_id('container_id', container_id)}"
