"""Atomic, durable file writes.

A file is written under a unique temporary name in its own directory (``O_EXCL``, so two writers never
share a temp file), fsynced, renamed over the target and, unless the caller batches it, the directory is
fsynced. Readers see the old file or the complete new one, never a part of it; a crash or an error at
any point leaves the old content and no temp file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_open", "atomic_write", "atomic_write_text", "fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """Make the renames done in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path, *, mode: int = 0o600, sync_dir: bool = True) -> Iterator[int]:
    """A raw fd for streaming the new content of ``path``; it is renamed into place when the block ends.

    If the block raises, the temp file is removed and ``path`` keeps its old content.
    ``sync_dir=False`` leaves the directory fsync to the caller (one fsync for many files).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (file mode ``mode``, umask not applied)."""
    with atomic_open(path, mode=mode, sync_dir=sync_dir) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


def atomic_write_text(
    path: Path, text: str, *, mode: int = 0o600, sync_dir: bool = True, encoding: str = "utf-8"
) -> None:
    """:func:`atomic_write` of ``text`` encoded with ``encoding``."""
    atomic_write(path, text.encode(encoding), mode=mode, sync_dir=sync_dir)
