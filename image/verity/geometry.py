"""Shape and placement of a dm-verity hash tree (pure arithmetic, no I/O).

Facts (cryptsetup ``lib/verity/verity_hash.c``, Linux ``dm-verity`` docs; checked against
veritysetup 2.6.1):

* a hash block holds P = 2^floor(log2(HBS / D)) digests (D = digest size), in both formats;
* format 1 stores each digest in a slot of the next power of two >= D bytes, zero padded
  (sha1: 20 + 12); format 0 packs digests back to back; the block tail is zero;
* there are L levels, the smallest L with (N - 1) >> (L * log2 P) == 0 (N = 1 gives L = 0: the
  root is the hash of the single data block); level i has ceil(N / P^(i+1)) blocks;
* levels are stored top first, level 0 (hashes of data blocks) last;
* the tree starts at hash block ceil((offset + 512) / HBS) after a superblock at ``offset``, or at
  floor(offset / HBS) without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ParameterError

__all__ = ["SUPERBLOCK_SIZE", "TreeGeometry"]

SUPERBLOCK_SIZE = 512
MAX_LEVELS = 63


def _bits_down(value: int) -> int:
    """floor(log2(value)) for value >= 1."""
    return value.bit_length() - 1


def _bits_up(value: int) -> int:
    """ceil(log2(value)) for value >= 1."""
    return (value - 1).bit_length()


@dataclass(frozen=True, slots=True)
class TreeGeometry:
    """Where every level of the tree lives on the hash device, for N data blocks."""

    digest_size: int
    data_block_size: int
    hash_block_size: int
    hash_type: int
    data_blocks: int
    hash_offset: int
    superblock: bool
    entries_per_block: int
    entry_bits: int
    slot_size: int
    hash_start_block: int
    level_sizes: tuple[int, ...]  # blocks per level, index 0 = leaves
    level_starts: tuple[int, ...]  # absolute hash-block number of each level's first block

    @classmethod
    def compute(cls, *, digest_size: int, data_block_size: int, hash_block_size: int, hash_type: int,
                data_blocks: int, hash_offset: int, superblock: bool) -> TreeGeometry:
        if data_blocks < 1:
            raise ParameterError("data blocks", data_blocks, "at least one complete data block")
        bits = _bits_down(hash_block_size // digest_size)
        if bits < 1:
            raise ParameterError("hash block size", hash_block_size,
                                 f"room for two {digest_size}-byte digests")
        slot = 1 << _bits_up(digest_size) if hash_type == 1 else digest_size
        levels = 0
        while bits * levels < 64 and (data_blocks - 1) >> (bits * levels):
            levels += 1
        if levels > MAX_LEVELS:
            raise ParameterError("data blocks", data_blocks, "a tree of at most 63 levels")
        if superblock:
            start = (hash_offset + SUPERBLOCK_SIZE + hash_block_size - 1) // hash_block_size
        else:
            start = hash_offset // hash_block_size
        sizes = tuple(
            (data_blocks + (1 << ((i + 1) * bits)) - 1) >> ((i + 1) * bits) for i in range(levels)
        )
        starts = [0] * levels
        position = start
        for i in range(levels - 1, -1, -1):
            starts[i] = position
            position += sizes[i]
        return cls(digest_size, data_block_size, hash_block_size, hash_type, data_blocks, hash_offset,
                   superblock, 1 << bits, bits, slot, start, sizes, tuple(starts))

    @property
    def levels(self) -> int:
        return len(self.level_sizes)

    @property
    def hash_blocks(self) -> int:
        """Blocks of the tree proper (veritysetup's "Hash blocks", superblock not counted)."""
        return sum(self.level_sizes)

    @property
    def hash_end(self) -> int:
        """Byte offset just past the tree on the hash device (the size a new hash file gets)."""
        return (self.hash_start_block + self.hash_blocks) * self.hash_block_size

    @property
    def data_size(self) -> int:
        """Bytes of the data device covered by the tree."""
        return self.data_blocks * self.data_block_size

    def level_offset(self, level: int) -> int:
        """Byte offset of a level's first block on the hash device."""
        return self.level_starts[level] * self.hash_block_size

    def data_blocks_per_leaf_block(self) -> int:
        return self.entries_per_block
