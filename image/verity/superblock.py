"""The 512-byte cryptsetup verity superblock (userspace metadata; the kernel never reads it).

Layout, little-endian (cryptsetup ``struct verity_sb``)::

    0   8  signature "verity\\0\\0"        80   2  salt size (<= 256)
    8   4  version = 1                     82   6  zero
    12  4  hash type (0 or 1)              88 256  salt, zero padded
    16 16  UUID, RFC byte order           344 168  zero
    32 32  hash name, NUL padded
    64  4  data block size
    68  4  hash block size
    72  8  number of data blocks
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ParameterError, SuperblockError
from .params import MAX_SALT_SIZE, VerityParams, parse_uuid

__all__ = ["SIGNATURE", "SUPERBLOCK_SIZE", "Superblock"]

SIGNATURE = b"verity\0\0"
SUPERBLOCK_SIZE = 512
VERSION = 1
_HEAD = struct.Struct("<8sII16s32sIIQH6s")  # up to the salt (88 bytes)
_NAME_SIZE = 32


def _format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Superblock:
    """A parsed or to-be-written superblock."""

    hash_type: int
    uuid: str
    hash_name: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes

    @classmethod
    def from_params(cls, params: VerityParams, *, uuid: str, salt: bytes, data_blocks: int) -> Superblock:
        return cls(params.hash_type, uuid, params.algorithm.name, params.data_block_size,
                   params.hash_block_size, data_blocks, salt)

    def encode(self) -> bytes:
        name = self.hash_name.lower().encode("ascii")
        if len(name) >= _NAME_SIZE:
            raise ParameterError("hash algorithm", self.hash_name, f"a name shorter than {_NAME_SIZE} bytes")
        head = _HEAD.pack(SIGNATURE, VERSION, self.hash_type, parse_uuid(self.uuid), name,
                          self.data_block_size, self.hash_block_size, self.data_blocks, len(self.salt),
                          b"\0" * 6)
        return (head + self.salt).ljust(SUPERBLOCK_SIZE, b"\0")

    @classmethod
    def decode(cls, raw: bytes, *, offset: int = 0) -> Superblock:
        """Parse attacker-controlled bytes; ``offset`` only feeds error messages."""
        if len(raw) < SUPERBLOCK_SIZE:
            raise SuperblockError("length", offset, f"{SUPERBLOCK_SIZE} bytes", len(raw))
        (signature, version, hash_type, uuid, name, dbs, hbs, blocks, salt_size,
         _pad) = _HEAD.unpack_from(raw)
        if signature != SIGNATURE:
            raise SuperblockError("signature", offset, repr(SIGNATURE), signature)
        if version != VERSION:
            raise SuperblockError("version", offset + 8, str(VERSION), version)
        if salt_size > MAX_SALT_SIZE:
            raise SuperblockError("salt size", offset + 80, f"<= {MAX_SALT_SIZE}", salt_size)
        hash_name_bytes = name.split(b"\0", 1)[0]
        try:
            hash_name = hash_name_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise SuperblockError("hash name", offset + 32, "ASCII", hash_name_bytes) from None
        if hash_name != hash_name.lower():
            # veritysetup writes lowercase names; accepting other spellings would let two different
            # superblocks describe the same tree.
            raise SuperblockError("hash name", offset + 32, "a lowercase name", hash_name_bytes)
        salt = bytes(raw[88:88 + salt_size])
        try:
            params = VerityParams(hash_name=hash_name, data_block_size=dbs, hash_block_size=hbs,
                                  salt=salt, hash_type=hash_type, data_blocks=blocks)
        except ParameterError as exc:
            raise SuperblockError(exc.parameter, offset, exc.expected, exc.found) from exc
        if blocks == 0:
            raise SuperblockError("data blocks", offset + 72, "at least 1", blocks)
        return cls(params.hash_type, _format_uuid(uuid), params.algorithm.name, dbs, hbs, blocks, salt)

    def to_params(self, *, hash_offset: int) -> VerityParams:
        return VerityParams(hash_name=self.hash_name, data_block_size=self.data_block_size,
                            hash_block_size=self.hash_block_size, salt=self.salt,
                            hash_type=self.hash_type, superblock=True, uuid=self.uuid,
                            data_blocks=self.data_blocks, hash_offset=hash_offset)
