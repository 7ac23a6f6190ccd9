"""A content-addressed blob cache: each blob is stored once under its digest, after verification.

Fills are atomic and safe under concurrency, across threads and processes: a per-digest lock file
(``flock``) serializes fillers of one digest, the bytes are streamed through the digest and size
check into a temporary file, fsynced and renamed into place (common.files.atomic_open). A second
container of the same image finds the blob and fetches nothing; a failed fill leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from common.files import atomic_open

from .digest import Digest, DigestVerifier
from .errors import NoSpaceError
from .manifest import Descriptor

__all__ = ["BlobCache", "Fetch", "VerifyingWriter"]

log = logging.getLogger("oci.cache")


class VerifyingWriter:
    """A sink for a blob's bytes that checks them against the descriptor while writing."""

    def __init__(self, out: BinaryIO, desc: Descriptor) -> None:
        self._out = out
        self.verifier = DigestVerifier(desc.digest, desc.size)

    def write(self, chunk: bytes | memoryview) -> int:
        self.verifier.update(chunk)
        return self._out.write(chunk)


Fetch = Callable[[Descriptor, VerifyingWriter], None]


class BlobCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("blobs", "locks"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has(self, desc: Descriptor) -> bool:
        try:
            return self.path(desc.digest).stat().st_size == desc.size
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _locked(self, digest: Digest) -> Iterator[None]:
        fd = os.open(self.root / "locks" / f"{digest.algorithm}-{digest.hex}",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ensure(self, desc: Descriptor, fetch: Fetch) -> tuple[Path, bool]:
        """The cached blob's path, fetching it first if absent; True when this call fetched it."""
        final = self.path(desc.digest)
        if self.has(desc):
            return final, False
        with self._locked(desc.digest):
            if self.has(desc):  # another filler finished while we waited
                return final, False
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                with atomic_open(final, mode=0o600) as fd, os.fdopen(fd, "wb", closefd=False) as out:
                    sink = VerifyingWriter(out, desc)
                    fetch(desc, sink)
                    sink.verifier.finish()  # before the rename: a mismatching blob is never cached
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpaceError("blob cache", str(self.root), f"caching {desc.digest} "
                                       f"({desc.size} bytes): {exc.strerror}") from None
                raise
        log.info("event=blob_cached digest=%s size=%d", desc.digest, desc.size)
        return final, True

    def read(self, desc: Descriptor) -> bytes:
        """A cached blob's bytes, checked again (small documents only: manifests, configs)."""
        data = self.path(desc.digest).read_bytes()
        desc.digest.verify(data, desc.size)
        return data


