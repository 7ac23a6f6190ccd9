"""Content digests (``algorithm:hex``) and streaming verification against a descriptor.

The grammar is the OCI image spec's restricted to the algorithms registries use: ``sha256`` (64
lowercase hex digits) and ``sha512`` (128). Anything else — upper-case hex, other algorithms,
``+``-separated encodings, whitespace — is refused, so two spellings of one digest cannot exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from .errors import BlobMismatchError, DigestError

__all__ = ["ALGORITHMS", "Digest", "DigestVerifier"]

ALGORITHMS = {"sha256": 64, "sha512": 128}
_GRAMMAR = re.compile(r"(sha256|sha512):([0-9a-f]+)")
_EXPECTED = "sha256:<64 lowercase hex> or sha512:<128 lowercase hex>"


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: object) -> Digest:
        if not isinstance(value, str):
            raise DigestError(repr(value), _EXPECTED)
        m = _GRAMMAR.fullmatch(value)
        if m is None or len(m.group(2)) != ALGORITHMS[m.group(1)]:
            raise DigestError(value, _EXPECTED)
        return cls(m.group(1), m.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        if algorithm not in ALGORITHMS:
            raise DigestError(f"{algorithm}:", _EXPECTED)
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def matches(self, data: bytes) -> bool:
        return hmac.compare_digest(hashlib.new(self.algorithm, data).hexdigest(), self.hex)

    def verify(self, data: bytes, size: int | None = None) -> None:
        """Raise BlobMismatchError unless ``data`` has this digest (and ``size``, if given)."""
        if size is not None and len(data) != size:
            raise BlobMismatchError(str(self), f"size {len(data)} bytes, descriptor says {size}")
        if not self.matches(data):
            raise BlobMismatchError(str(self), "content digest differs from the descriptor")


class DigestVerifier:
    """Feed a blob's bytes as they arrive; refuses more than ``size`` bytes as soon as they show up.

    ``finish()`` checks the total size and the digest. Callers must not use the bytes before it
    returned.
    """

    def __init__(self, digest: Digest, size: int) -> None:
        self.digest = digest
        self.size = size
        self.seen = 0
        self._hash = hashlib.new(digest.algorithm)

    def update(self, chunk: bytes | memoryview) -> None:
        self.seen += len(chunk)
        if self.seen > self.size:
            raise BlobMismatchError(str(self.digest), f"more than the descriptor's {self.size} bytes")
        self._hash.update(chunk)

    def finish(self) -> None:
        if self.seen != self.size:
            raise BlobMismatchError(str(self.digest), f"size {self.seen} bytes, descriptor says {self.size}")
        if not hmac.compare_digest(self._hash.hexdigest(), self.digest.hex):
            raise BlobMismatchError(str(self.digest), "content digest differs from the descriptor")
