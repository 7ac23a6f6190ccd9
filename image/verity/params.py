"""dm-verity parameters: the values veritysetup takes, validated once so a bad set cannot exist.

A :class:`VerityParams` is what ``veritysetup format`` is told; :class:`HashAlgorithm` maps a
kernel/cryptsetup hash name (``sha256``, ``sha3-256``, ``blake2b-512``) onto :mod:`hashlib`.
Limits are cryptsetup's: block sizes are powers of two from 512 bytes to 512 KiB, the salt is at
most 256 bytes, the hash offset is a multiple of 512, the format (hash type) is 0 or 1.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError

__all__ = [
    "DEFAULT_SALT_SIZE",
    "MAX_BLOCK_SIZE",
    "MAX_SALT_SIZE",
    "MIN_BLOCK_SIZE",
    "HashAlgorithm",
    "VerityParams",
    "hash_algorithm",
    "parse_salt",
    "parse_uuid",
]

MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 512 * 1024
MAX_SALT_SIZE = 256
DEFAULT_SALT_SIZE = 32  # veritysetup's compiled-in default: 32 random bytes
SECTOR_SIZE = 512

# Kernel crypto API name -> (hashlib constructor name, keyword arguments). Every entry was checked
# against veritysetup 2.6.1 (OpenSSL backend); the kernel must of course also know the name.
_ALGORITHMS: dict[str, tuple[str, dict[str, int]]] = {
    "sha1": ("sha1", {}),
    "sha224": ("sha224", {}),
    "sha256": ("sha256", {}),
    "sha384": ("sha384", {}),
    "sha512": ("sha512", {}),
    "md5": ("md5", {}),
    "ripemd160": ("ripemd160", {}),
    "sha3-224": ("sha3_224", {}),
    "sha3-256": ("sha3_256", {}),
    "sha3-384": ("sha3_384", {}),
    "sha3-512": ("sha3_512", {}),
    "blake2b-512": ("blake2b", {"digest_size": 64}),
    "blake2s-256": ("blake2s", {"digest_size": 32}),
}

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})*")


@dataclass(frozen=True, slots=True)
class HashAlgorithm:
    """A hash function by its kernel name, with a fast constructor and its digest size."""

    name: str
    digest_size: int
    _hashlib_name: str
    _kwargs: tuple[tuple[str, int], ...]

    def new(self, data: bytes | bytearray | memoryview = b"") -> Any:
        """A fresh hashlib object (``Any``: hashlib's object type is private)."""
        return self.constructor()(data)

    def constructor(self) -> Callable[..., Any]:
        """The direct hashlib constructor (faster than :func:`hashlib.new` in a hot loop)."""
        name = self._hashlib_name
        ctor: Callable[..., Any] = getattr(hashlib, name, None) or (lambda data=b"": hashlib.new(name, data))
        kwargs = dict(self._kwargs)
        if not kwargs:
            return ctor
        return lambda data=b"": ctor(data, **kwargs)


def hash_algorithm(name: str) -> HashAlgorithm:
    """Look up a hash by its kernel name (case-insensitive, as cryptsetup accepts ``SHA256``)."""
    key = name.lower()
    entry = _ALGORITHMS.get(key)
    if entry is None:
        raise ParameterError("hash algorithm", name, "one of " + ", ".join(sorted(_ALGORITHMS)))
    hashlib_name, kwargs = entry
    try:
        ctor: Callable[..., Any] = getattr(hashlib, hashlib_name, None) or (
            lambda **kw: hashlib.new(hashlib_name))
        size: int = ctor(**kwargs).digest_size
    except ValueError as exc:  # e.g. ripemd160 missing from this OpenSSL build
        raise ParameterError("hash algorithm", name, f"a hash this OpenSSL provides ({exc})") from exc
    return HashAlgorithm(key, size, hashlib_name, tuple(sorted(kwargs.items())))


def parse_salt(text: str) -> bytes:
    """veritysetup's ``--salt``: ``-`` or an empty string mean no salt, otherwise even-length hex."""
    if text in ("-", ""):
        return b""
    if not _HEX_RE.fullmatch(text):
        raise ParameterError("salt", text, "'-' or an even number of hex digits")
    salt = bytes.fromhex(text)
    if len(salt) > MAX_SALT_SIZE:
        raise ParameterError("salt", text, f"at most {MAX_SALT_SIZE} bytes")
    return salt


def parse_uuid(text: str) -> bytes:
    """The 16 raw bytes of a ``8-4-4-4-12`` UUID string (stored big-endian in the superblock)."""
    if not _UUID_RE.fullmatch(text):
        raise ParameterError("uuid", text, "the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    return bytes.fromhex(text.replace("-", ""))


def _check_block_size(parameter: str, value: int) -> None:
    if (not isinstance(value, int) or value < MIN_BLOCK_SIZE or value > MAX_BLOCK_SIZE
            or value & (value - 1)):
        raise ParameterError(parameter, value, f"a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}")


@dataclass(frozen=True, slots=True)
class VerityParams:
    """Everything ``veritysetup format`` is told, validated on construction.

    ``salt=None`` and ``uuid=None`` mean "pick at random when formatting" (veritysetup's default);
    pass fixed values for reproducible images. ``data_blocks=None`` (or 0) means "every complete
    data block of the data file". ``hash_offset`` is the byte offset of the superblock (or, without
    one, of the tree) on the hash device.
    """

    hash_name: str = "sha256"
    data_block_size: int = 4096
    hash_block_size: int = 4096
    salt: bytes | None = None
    hash_type: int = 1
    superblock: bool = True
    uuid: str | None = None
    data_blocks: int | None = None
    hash_offset: int = 0

    def __post_init__(self) -> None:
        hash_algorithm(self.hash_name)
        _check_block_size("data block size", self.data_block_size)
        _check_block_size("hash block size", self.hash_block_size)
        if self.salt is not None and (not isinstance(self.salt, bytes) or len(self.salt) > MAX_SALT_SIZE):
            raise ParameterError("salt", self.salt, f"bytes, at most {MAX_SALT_SIZE} long")
        if self.hash_type not in (0, 1):
            raise ParameterError("hash type (format)", self.hash_type, "0 (Chrome OS) or 1 (normal)")
        if self.uuid is not None:
            parse_uuid(self.uuid)
        if self.data_blocks is not None and (
                not isinstance(self.data_blocks, int) or not 0 <= self.data_blocks < 2**63):
            raise ParameterError("data blocks", self.data_blocks, "0 (whole file) or a positive count")
        if (not isinstance(self.hash_offset, int) or self.hash_offset < 0 or self.hash_offset >= 2**63
                or self.hash_offset % SECTOR_SIZE):
            raise ParameterError("hash offset", self.hash_offset, "a non-negative multiple of 512")

    @property
    def algorithm(self) -> HashAlgorithm:
        return hash_algorithm(self.hash_name)
