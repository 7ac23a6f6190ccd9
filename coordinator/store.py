"""Filesystem key-value store for the history (Contrast's afero backend semantics).

Keys are ``<dir>/<name>``, each part ``[a-zA-Z0-9-]+``. Every write goes through
``common.files.atomic_write`` (unique temp file in the same directory, fsync, rename, directory
fsync), so a crash (kill -9) at any point leaves either the old or the new value, never a partial
one. Compare-and-swap holds an exclusive flock on ``<root>/.lock`` so two Coordinator processes on
one state dir serialise their updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from common.files import atomic_write
from coordinator.errors import HistoryError, LatestChangedError, NotFoundError

_KEY = re.compile(r"^[a-zA-Z0-9-]+/[a-zA-Z0-9-]+$")
MAX_VALUE = 64 * 1024 * 1024


def _check_key(key: str) -> None:
    if not _KEY.match(key):
        raise HistoryError(f"invalid store key {key!r}, expected <dir>/<name> of [a-zA-Z0-9-]+")


class FileStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_VALUE + 1)
        except FileNotFoundError as exc:
            raise NotFoundError(f"store key {key} not found") from exc
        if len(data) > MAX_VALUE:
            raise HistoryError(f"store value {key} exceeds {MAX_VALUE} bytes")
        return data

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def set(self, key: str, value: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        atomic_write(path, value)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def compare_and_swap(self, key: str, old: bytes | None, new: bytes) -> None:
        """Set `key` to `new` only if it currently holds `old` (None: only if absent)."""
        with self._locked():
            try:
                current: bytes | None = self.get(key)
            except NotFoundError:
                current = None
            if current != old:
                raise LatestChangedError(f"object {key} has changed since last read")
            self.set(key, new)
