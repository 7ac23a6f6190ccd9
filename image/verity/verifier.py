"""``veritysetup verify``: recompute the tree from the data and compare it with the stored one.

Checks the same things in the same order as cryptsetup, so the first failure reported is the
same: level 0 against the data blocks first (stored digest, then format-1 slot padding, then the
zero tail of each block), then each level above against the level below, then the root hash.
The hash file is attacker data: it is only read and compared, never interpreted beyond the
superblock, which is parsed strictly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .builder import StrPath, check_overlap, resolve
from .errors import DeviceError, HashAreaCorruptError, ParameterError, RootHashMismatchError, SuperblockError
from .geometry import TreeGeometry
from .params import VerityParams
from .pipeline import DEFAULT_CHUNK_BYTES, leaf_chunks
from .result import VerityResult
from .superblock import SUPERBLOCK_SIZE, Superblock
from .tree import BlockHasher, HashBlock, TreeAssembler, locate_difference

__all__ = ["params_from_superblock", "read_superblock", "verify"]


def _pread_exact(fd: int, size: int, offset: int, what: str) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = os.pread(fd, size - len(out), offset + len(out))
        if not chunk:
            raise DeviceError(f"{what} ends at byte {offset + len(out)}, needed {offset + size}")
        out += chunk
    return bytes(out)


def read_superblock(hash_path: StrPath, hash_offset: int = 0) -> Superblock:
    """Parse the verity superblock at ``hash_offset`` of the hash device."""
    if hash_offset % 512:
        raise ParameterError("hash offset", hash_offset, "a multiple of 512")
    try:
        fd = os.open(hash_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(f"cannot open hash device {hash_path}: {exc.strerror}") from exc
    try:
        raw = os.pread(fd, SUPERBLOCK_SIZE, hash_offset)
    finally:
        os.close(fd)
    if len(raw) < SUPERBLOCK_SIZE:
        raise SuperblockError("length", hash_offset, f"{SUPERBLOCK_SIZE} bytes", len(raw))
    return Superblock.decode(raw, offset=hash_offset)


def params_from_superblock(hash_path: StrPath, hash_offset: int = 0) -> VerityParams:
    return read_superblock(hash_path, hash_offset).to_params(hash_offset=hash_offset)


def verify(data_path: StrPath, hash_path: StrPath, root_hash: bytes | str,
           params: VerityParams | None = None, *, workers: int | None = None,
           chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> VerityResult:
    """Check ``data_path`` against the tree in ``hash_path`` and the expected ``root_hash``.

    With ``params.superblock`` (the default) every parameter except ``hash_offset`` comes from the
    superblock, as with veritysetup; otherwise ``params`` must carry them, salt included.
    Raises :class:`HashAreaCorruptError` or :class:`RootHashMismatchError`; returns the result on success.
    """
    params = params or VerityParams()
    if params.superblock:
        params = params_from_superblock(hash_path, params.hash_offset)
    elif params.salt is None:
        raise ParameterError("salt", None, "the salt used at format time ('-' for none)")
    resolved, geometry = resolve(data_path, params, pick_random=False)
    check_overlap(Path(data_path), Path(hash_path), geometry)
    algorithm = params.algorithm
    if isinstance(root_hash, str):
        try:
            root_hash = bytes.fromhex(root_hash)
        except ValueError:
            raise ParameterError("root hash", root_hash, "hex digits") from None
    if len(root_hash) != algorithm.digest_size:
        raise ParameterError("root hash", root_hash.hex(),
                             f"{algorithm.digest_size} bytes of {algorithm.name}")
    salt = resolved.salt or b""
    hasher = BlockHasher(algorithm, salt, params.hash_type)
    if geometry.levels == 0:
        with open(data_path, "rb") as f:
            computed = hasher.digest(f.read(geometry.data_block_size))
    else:
        computed = _verify_tree(Path(data_path), Path(hash_path), hasher, resolved, geometry,
                                workers=workers, chunk_bytes=chunk_bytes)
    if computed != root_hash:
        raise RootHashMismatchError(root_hash, computed)
    return VerityResult(resolved, geometry, computed)


def _verify_tree(data: Path, hash_path: Path, hasher: BlockHasher, params: VerityParams,
                 geometry: TreeGeometry,                 *, workers: int | None, chunk_bytes: int) -> bytes:
    try:
        fd = os.open(hash_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(f"cannot open hash device {hash_path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        size = os.lseek(fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        if size < geometry.hash_end:
            raise DeviceError(f"hash device {hash_path} has {size} bytes, the tree needs {geometry.hash_end}")
        failures: dict[int, HashAreaCorruptError] = {}

        def check(block: HashBlock) -> None:
            stored = _pread_exact(fd, len(block.data), block.offset, "hash device")
            if stored != block.data and block.level not in failures:
                failures[block.level] = locate_difference(block.data, stored, block, geometry)

        assembler = TreeAssembler(geometry, hasher)
        hbs = geometry.hash_block_size
        leaf_base = geometry.level_offset(0)
        for chunk in leaf_chunks(str(data), params.algorithm.name, params.salt or b"", geometry,
                                 workers=workers, chunk_bytes=chunk_bytes):
            stored = _pread_exact(fd, len(chunk.leaf_bytes), leaf_base + chunk.first_leaf * hbs,
                                  "hash device")
            if stored != chunk.leaf_bytes:
                # Level 0 is checked first and in data order: its first failure is the one to report.
                for i in range(len(chunk.leaf_digests)):
                    mine = chunk.leaf_bytes[i * hbs:(i + 1) * hbs]
                    theirs = stored[i * hbs:(i + 1) * hbs]
                    if mine != theirs:
                        index = chunk.first_leaf + i
                        block = HashBlock(0, index, leaf_base + index * hbs, mine)
                        raise locate_difference(mine, theirs, block, geometry)
            for block in assembler.add_leaves(chunk.leaf_digests):
                check(block)
        for block in assembler.finish():
            check(block)
        if failures:
            raise failures[min(failures)]
        return assembler.root
    finally:
        os.close(fd)
