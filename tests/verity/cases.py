"""Hypothesis strategies for random verity parameters and inputs, and the veritysetup argv for them."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from hypothesis import strategies as st

from image.verity import VerityParams

# sha256 dominates (what every user runs); the rest covers other digest sizes and slot padding.
HASHES = ["sha256", "sha256", "sha256", "sha1", "sha1", "sha512", "sha512", "sha224", "sha384", "md5",
          "sha3-256", "blake2b-512", "ripemd160"]
BLOCK_SIZES = [512, 1024, 2048, 4096, 4096, 4096, 8192]
LARGE_BLOCK_SIZES = [16384, 65536, 524288]  # up to cryptsetup's 512 KiB limit


@dataclass(frozen=True)
class Case:
    hash_name: str
    hash_type: int
    data_block_size: int
    hash_block_size: int
    salt_text: str  # as on the command line: hex, "-" or ""
    superblock: bool
    uuid: str
    blocks_in_file: int
    tail_bytes: int  # a partial block at the end, ignored by both
    data_blocks: int  # 0 = whole file
    hash_offset: int
    same_file: bool
    existing_hash_file: bool  # pre-filled with garbage: untouched bytes must stay untouched
    content: str  # random | zero | repeat
    seed: int

    def data(self) -> bytes:
        rng = random.Random(self.seed)
        size = self.blocks_in_file * self.data_block_size + self.tail_bytes
        if self.content == "zero":
            return bytes(size)
        if self.content == "repeat":
            block = rng.randbytes(self.data_block_size)
            return (block * (self.blocks_in_file + 1))[:size]
        return rng.randbytes(size)

    def garbage(self, size: int) -> bytes:
        return random.Random(self.seed + 1).randbytes(size)

    @property
    def salt(self) -> bytes:
        return b"" if self.salt_text in ("-", "") else bytes.fromhex(self.salt_text)

    def params(self) -> VerityParams:
        return VerityParams(hash_name=self.hash_name, data_block_size=self.data_block_size,
                            hash_block_size=self.hash_block_size, salt=self.salt, hash_type=self.hash_type,
                            superblock=self.superblock, uuid=self.uuid if self.superblock else None,
                            data_blocks=self.data_blocks or None, hash_offset=self.hash_offset)

    def options(self) -> list[str]:
        """veritysetup's options for this case (our CLI takes the same)."""
        opts = [f"--hash={self.hash_name}", f"--format={self.hash_type}",
                f"--data-block-size={self.data_block_size}", f"--hash-block-size={self.hash_block_size}",
                f"--salt={self.salt_text}"]
        if self.superblock:
            opts.append(f"--uuid={self.uuid}")
        else:
            opts.append("--no-superblock")
        if self.data_blocks:
            opts.append(f"--data-blocks={self.data_blocks}")
        if self.hash_offset:
            opts.append(f"--hash-offset={self.hash_offset}")
        return opts


@st.composite
def cases(draw: st.DrawFn, *, max_bytes: int = 3 << 20) -> Case:
    dbs = draw(st.one_of(st.sampled_from(BLOCK_SIZES), st.sampled_from(LARGE_BLOCK_SIZES[:2])))
    hbs = draw(st.one_of(st.sampled_from(BLOCK_SIZES), st.sampled_from(LARGE_BLOCK_SIZES)))
    max_blocks = max(1, max_bytes // dbs)
    blocks = draw(st.one_of(st.integers(1, 4), st.integers(1, max_blocks)))
    tail = draw(st.sampled_from([0, 0, 0, 1, dbs - 1]))
    data_blocks = draw(st.one_of(st.just(0), st.integers(1, blocks)))
    salt_kind = draw(st.sampled_from(["hex", "hex", "hex", "dash", "empty"]))
    salt_text = {"dash": "-", "empty": ""}.get(salt_kind) or draw(st.binary(min_size=1, max_size=256)).hex()
    superblock = draw(st.booleans())
    same_file = draw(st.integers(0, 4)) == 0
    if same_file:
        # Tree after the data (rounded to a sector, optionally further out), as veritysetup requires.
        base = -(-(blocks * dbs + tail) // 512) * 512
        offset = base + 512 * draw(st.integers(0, 16))
    else:
        offset = draw(st.one_of(st.just(0), st.just(0), st.integers(1, 128).map(lambda k: 512 * k)))
    return Case(
        hash_name=draw(st.sampled_from(HASHES)), hash_type=draw(st.sampled_from([1, 1, 0])),
        data_block_size=dbs, hash_block_size=hbs, salt_text=salt_text, superblock=superblock,
        uuid=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))), blocks_in_file=blocks, tail_bytes=tail,
        data_blocks=data_blocks, hash_offset=offset, same_file=same_file,
        existing_hash_file=not same_file and draw(st.booleans()),
        content=draw(st.sampled_from(["random", "random", "zero", "repeat"])),
        seed=draw(st.integers(0, 2**32)),
    )
