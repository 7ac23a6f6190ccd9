"""``veritysetup format``: build the hash tree of a data file and write it to the hash file.

Writes exactly the byte ranges veritysetup writes — the 512-byte superblock at the hash offset and
every tree block whole — and leaves everything else as it was, so the result is bit-identical
also on a pre-existing hash file or with the tree appended to the data file itself.

Fail closed: all parameters and sizes are checked before anything is written. A hash file that
does not exist yet is built under a temporary name and renamed into place after fsync, so a crash
never leaves a half tree under the real name. An existing hash file (a block device, or the data
file itself with ``hash_offset``) is written in place, as it must be.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import uuid as uuid_module
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from common.files import atomic_open

from .errors import DeviceError, ParameterError
from .geometry import TreeGeometry
from .params import DEFAULT_SALT_SIZE, VerityParams
from .pipeline import DEFAULT_CHUNK_BYTES, leaf_chunks
from .result import VerityResult
from .superblock import SUPERBLOCK_SIZE, Superblock
from .tree import BlockHasher, TreeAssembler

__all__ = ["check_overlap", "format_hash_tree", "resolve"]

log = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGESIZE")

StrPath = str | os.PathLike[str]


def _data_size(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(f"cannot open data device {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            return os.lseek(fd, 0, os.SEEK_END)
        if not stat.S_ISREG(st.st_mode):
            raise DeviceError(f"data device {path} is neither a regular file nor a block device")
        return st.st_size
    finally:
        os.close(fd)


def resolve(data_path: StrPath, params: VerityParams, *,
            pick_random: bool = True) -> tuple[VerityParams, TreeGeometry]:
    """Fill in what veritysetup picks itself (salt, UUID, data block count) and compute the shape.

    Raises before any write: data file too small or empty, parameters the tree cannot hold.
    """
    data = Path(data_path)
    size = _data_size(data)
    blocks = params.data_blocks or size // params.data_block_size
    if blocks < 1:
        raise ParameterError("data blocks", blocks,
                             f"at least one {params.data_block_size}-byte block in {data} ({size} bytes)")
    if blocks * params.data_block_size > size:
        raise DeviceError(f"data device {data} has {size} bytes, {blocks} blocks of "
                          f"{params.data_block_size} need {blocks * params.data_block_size}")
    salt = params.salt
    if salt is None:
        salt = secrets.token_bytes(DEFAULT_SALT_SIZE) if pick_random else b""
    uid = params.uuid
    if uid is None and params.superblock and pick_random:
        uid = str(uuid_module.uuid4())
    resolved = replace(params, salt=salt, uuid=uid, data_blocks=blocks)
    geometry = TreeGeometry.compute(
        digest_size=params.algorithm.digest_size, data_block_size=params.data_block_size,
        hash_block_size=params.hash_block_size, hash_type=params.hash_type, data_blocks=blocks,
        hash_offset=params.hash_offset, superblock=params.superblock)
    return resolved, geometry


def _superblock_span(hash_path: Path, geometry: TreeGeometry) -> int | None:
    """End of the block cryptsetup rewrites around the superblock on a regular file, or None.

    cryptsetup writes the 512-byte superblock with read-modify-write of one I/O block of
    min(page size, hash block size) bytes: the file grows to the end of that block (zero filled),
    and a superblock that starts inside such a block needs the bytes before and under it to
    exist already (else "Error during update of verity header"). We reproduce the first and
    refuse the second up front, before anything is written.
    """
    try:
        st = hash_path.stat()
    except FileNotFoundError:
        size = 0
    else:
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
    io_block = min(PAGE_SIZE, geometry.hash_block_size)
    offset = geometry.hash_offset
    if geometry.levels:
        size = max(size, geometry.hash_end)
    if offset % io_block and size < offset + SUPERBLOCK_SIZE:
        raise DeviceError(f"superblock at byte {offset} lies inside a {io_block}-byte block beyond the end "
                          f"of {hash_path} ({size} bytes); veritysetup cannot write it either: "
                          f"use an offset that is a multiple of {io_block}")
    return offset - offset % io_block + io_block


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_overlap(data: Path, hash_path: Path, geometry: TreeGeometry) -> None:
    """Data and tree on one file: the data area must end before the hash area.

    veritysetup compares with the hash offset only; without a superblock the tree starts at the
    offset rounded down to a hash block, and veritysetup then silently overwrites the last data
    blocks with the tree. We refuse that too.
    """
    start = geometry.hash_offset
    if geometry.hash_blocks:
        start = min(start, geometry.hash_start_block * geometry.hash_block_size)
    if hash_path.exists() and _same_file(data, hash_path) and geometry.data_size > start:
        raise DeviceError(f"data area (bytes 0..{geometry.data_size}) overlaps with hash area "
                          f"(from byte {start}) on {hash_path}")


@contextlib.contextmanager
def _hash_output(path: Path) -> Iterator[int]:
    """An fd to write the hash area into: in place if the file exists, else a temp file renamed on success."""
    if path.exists():
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(f"cannot open hash device {path} for writing: {exc.strerror}") from exc
        try:
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    with contextlib.ExitStack() as stack:
        try:
            # 0600 like veritysetup's newly created hash image. The file is complete and on disk
            # before it gets its name; the directory is not fsynced (that forces a journal commit
            # of the whole file system: +0.5 s measured on a busy host).
            fd = stack.enter_context(atomic_open(path, mode=0o600, sync_dir=False))
        except OSError as exc:
            raise DeviceError(f"cannot create hash image {path}: {exc.strerror}") from exc
        yield fd


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def format_hash_tree(data_path: StrPath, hash_path: StrPath, params: VerityParams | None = None, *,
                     workers: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> VerityResult:
    """Build the dm-verity tree of ``data_path`` into ``hash_path``; same bytes as ``veritysetup format``.

    ``workers``: processes hashing data blocks (default: CPUs available; 1 = in this process).
    Returns the root hash and the resolved parameters (random salt/UUID filled in).
    """
    params = params or VerityParams()
    data = Path(data_path)
    target = Path(hash_path)
    resolved, geometry = resolve(data, params)
    salt = resolved.salt or b""
    check_overlap(data, target, geometry)
    if target.is_dir():
        raise DeviceError(f"hash device {target} is a directory")
    sb_end = _superblock_span(target, geometry) if resolved.superblock else None
    hasher = BlockHasher(params.algorithm, salt, params.hash_type)
    log.debug("verity format data=%s hash=%s blocks=%d levels=%d", data, target, geometry.data_blocks,
              geometry.levels)
    with _hash_output(target) as fd:
        if geometry.levels == 0:
            root = hasher.digest(_read_block(data, geometry.data_block_size))
        else:
            assembler = TreeAssembler(geometry, hasher)
            leaf_base = geometry.level_offset(0)
            hbs = geometry.hash_block_size
            for chunk in leaf_chunks(str(data), params.algorithm.name, salt, geometry,
                                     workers=workers, chunk_bytes=chunk_bytes):
                _pwrite_all(fd, chunk.leaf_bytes, leaf_base + chunk.first_leaf * hbs)
                for block in assembler.add_leaves(chunk.leaf_digests):
                    _pwrite_all(fd, block.data, block.offset)
            for block in assembler.finish():
                _pwrite_all(fd, block.data, block.offset)
            root = assembler.root
        if resolved.superblock:
            if resolved.uuid is None:  # resolve() always sets one
                raise AssertionError("superblock without UUID")
            sb = Superblock.from_params(resolved, uuid=resolved.uuid, salt=salt,
                                        data_blocks=geometry.data_blocks)
            if sb_end is not None and os.fstat(fd).st_size < sb_end:
                os.ftruncate(fd, sb_end)
            _pwrite_all(fd, sb.encode(), params.hash_offset)
    log.info("verity formatted data=%s hash=%s data_blocks=%d hash_blocks=%d root=%s", data, target,
             geometry.data_blocks, geometry.hash_blocks, root.hex())
    return VerityResult(resolved, geometry, root)


def _read_block(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        block = f.read(size)
    if len(block) != size:
        raise DeviceError(f"data device {path} shorter than one block")
    return block
