"""The hash tree as a sans-IO state machine: blocks in, hash blocks and the root hash out.

:class:`BlockHasher` hashes one block the way dm-verity does (format 1: H(salt ‖ block);
format 0: H(block ‖ salt)). :func:`hash_leaves` turns consecutive data blocks into level-0 hash
blocks — the bulk of the work, run in worker processes by :mod:`.builder`. :class:`TreeAssembler`
takes level-0 blocks in order and yields every hash block of the levels above plus the root,
keeping one pending block per level, so memory stays flat whatever the data size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import HashAreaCorruptError
from .geometry import TreeGeometry
from .params import HashAlgorithm

__all__ = ["BlockHasher", "HashBlock", "TreeAssembler", "hash_leaves", "locate_difference", "pack_leaves"]

Buffer = bytes | bytearray | memoryview


class BlockHasher:
    """Hash of one data or hash block with the salt placed as the format demands."""

    __slots__ = ("_ctor", "_prototype", "_salt", "digest_size", "hash_type")

    def __init__(self, algorithm: HashAlgorithm, salt: bytes, hash_type: int) -> None:
        self._ctor: Callable[..., Any] = algorithm.constructor()
        self._salt = salt
        self.hash_type = hash_type
        self.digest_size = algorithm.digest_size
        # Format 1 hashes the salt first: absorb it once, copy the state per block.
        self._prototype = self._ctor(salt) if hash_type == 1 and salt else None

    def digest(self, block: Buffer) -> bytes:
        if self._prototype is not None:
            h = self._prototype.copy()
            h.update(block)
            return h.digest()  # type: ignore[no-any-return]
        h = self._ctor(block)
        if self.hash_type == 0 and self._salt:
            h.update(self._salt)
        return h.digest()  # type: ignore[no-any-return]

    def digests(self, data: Buffer, block_size: int, count: int) -> list[bytes]:
        """Digests of ``count`` consecutive blocks at the start of ``data`` (the hot loop)."""
        view = memoryview(data)
        out: list[bytes] = []
        append = out.append
        proto = self._prototype
        if proto is not None:
            for start in range(0, count * block_size, block_size):
                h = proto.copy()
                h.update(view[start:start + block_size])
                append(h.digest())
        else:
            ctor = self._ctor
            tail = self._salt if self.hash_type == 0 else b""
            for start in range(0, count * block_size, block_size):
                h = ctor(view[start:start + block_size])
                if tail:
                    h.update(tail)
                append(h.digest())
        return out


def pack_block(digests: Sequence[bytes], geometry: TreeGeometry) -> bytes:
    """One hash block: digests in slots (format 1 pads each to a power of two), zero tail."""
    pad = b"\0" * (geometry.slot_size - geometry.digest_size)
    body = b"".join(d + pad for d in digests) if pad else b"".join(digests)
    return body + b"\0" * (geometry.hash_block_size - len(body))


def hash_leaves(hasher: BlockHasher, data: Buffer, count: int,
                geometry: TreeGeometry) -> tuple[bytes, list[bytes]]:
    """Level-0 hash blocks for ``count`` data blocks (a run starting on a leaf-block boundary).

    Returns the packed level-0 blocks and the digest of each of them (what level 1 is made of).
    """
    return pack_leaves(hasher, hasher.digests(data, geometry.data_block_size, count), geometry)


def pack_leaves(hasher: BlockHasher, digests: Sequence[bytes],
                geometry: TreeGeometry) -> tuple[bytes, list[bytes]]:
    """Pack data-block digests into level-0 blocks; returns them and their own digests."""
    count = len(digests)
    per_block = geometry.entries_per_block
    blocks = [pack_block(digests[i:i + per_block], geometry) for i in range(0, count, per_block)]
    leaf_bytes = b"".join(blocks)
    return leaf_bytes, hasher.digests(leaf_bytes, geometry.hash_block_size, len(blocks))


@dataclass(frozen=True, slots=True)
class HashBlock:
    """One finished hash block: its tree level, index within the level and byte offset."""

    level: int
    index: int
    offset: int
    data: bytes


class TreeAssembler:
    """Consumes level-0 blocks in order; emits the blocks of levels >= 1 and finally the root.

    Needs ``geometry.levels >= 1`` (a one-block tree has no hash blocks; see :func:`root_of_single`).
    """

    def __init__(self, geometry: TreeGeometry, hasher: BlockHasher) -> None:
        if geometry.levels < 1:
            raise ValueError("TreeAssembler needs at least one tree level")
        self._geometry = geometry
        self._hasher = hasher
        self._pending: list[list[bytes]] = [[] for _ in range(geometry.levels)]
        self._emitted = [0] * geometry.levels
        self._root: bytes | None = None

    @property
    def leaf_blocks_seen(self) -> int:
        return self._emitted[0]

    def add_leaves(self, leaf_digests: Sequence[bytes]) -> Iterator[HashBlock]:
        """Register the digests of the next consecutive level-0 blocks (their bytes are written or
        compared in bulk by the caller at :meth:`TreeGeometry.level_offset`); yields every block of
        the upper levels that became complete."""
        if self._emitted[0] + len(leaf_digests) > self._geometry.level_sizes[0]:
            raise ValueError("more level-0 blocks than the geometry has")
        self._emitted[0] += len(leaf_digests)
        for digest in leaf_digests:
            yield from self._push(1, digest)

    def finish(self) -> Iterator[HashBlock]:
        """Flush partial blocks bottom-up; afterwards :attr:`root` is set."""
        g = self._geometry
        if self._emitted[0] != g.level_sizes[0]:
            raise ValueError(f"got {self._emitted[0]} level-0 blocks, expected {g.level_sizes[0]}")
        for level in range(1, g.levels):
            if self._pending[level]:
                yield from self._emit(level)
        if self._root is None or self._emitted != list(g.level_sizes):
            raise AssertionError("tree shape differs from its geometry")  # a bug, not bad input

    @property
    def root(self) -> bytes:
        if self._root is None:
            raise ValueError("tree not finished")
        return self._root

    def _push(self, level: int, digest: bytes) -> Iterator[HashBlock]:
        if level == self._geometry.levels:
            if self._root is not None:
                raise AssertionError("second root digest")
            self._root = digest
            return
        pending = self._pending[level]
        pending.append(digest)
        if len(pending) == self._geometry.entries_per_block:
            yield from self._emit(level)

    def _emit(self, level: int) -> Iterator[HashBlock]:
        g = self._geometry
        block = pack_block(self._pending[level], g)
        self._pending[level] = []
        index = self._emitted[level]
        self._emitted[level] += 1
        yield HashBlock(level, index, g.level_offset(level) + index * g.hash_block_size, block)
        yield from self._push(level + 1, self._hasher.digest(block))


def locate_difference(expected: bytes, stored: bytes, block: HashBlock,
                      geometry: TreeGeometry) -> HashAreaCorruptError:
    """Name the first failing check in a stored hash block the way veritysetup reports it.

    veritysetup walks the block entry by entry (digest, then format-1 slot padding), then the
    zero tail; the first differing byte tells which check fails first.
    """
    k = next(i for i, (a, b) in enumerate(zip(expected, stored, strict=True)) if a != b)
    g = geometry
    level = block.level
    first_child = block.index * g.entries_per_block
    children = (g.data_blocks if level == 0 else g.level_sizes[level - 1]) - first_child
    count = min(children, g.entries_per_block)
    entry, within = divmod(k, g.slot_size)
    if entry < count:
        if within < g.digest_size:
            child = first_child + entry
            if level == 0:
                position = child * g.data_block_size
            else:
                position = g.level_offset(level - 1) + child * g.hash_block_size
            return HashAreaCorruptError("digest", position, level)
        return HashAreaCorruptError("spare", block.offset + entry * g.slot_size + g.digest_size, level)
    return HashAreaCorruptError("spare", block.offset + count * g.slot_size, level)
