"""dm-verity hash trees, bit-exact with ``veritysetup format`` / ``verify``.

Layout: :mod:`.params` (validated parameters), :mod:`.geometry` (tree shape and placement),
:mod:`.tree` (sans-IO hashing and tree assembly), :mod:`.superblock` (the 512-byte header),
:mod:`.pipeline` (level-0 hashing in worker processes), :mod:`.builder` (format), :mod:`.verifier`
(verify), :mod:`.table` (kernel table / ``dm-mod.create``), :mod:`.cli` (``python -m image verity``).
"""

from .builder import format_hash_tree
from .errors import (
    DeviceError,
    HashAreaCorruptError,
    ParameterError,
    RootHashMismatchError,
    SuperblockError,
    VerificationError,
    VerityError,
)
from .geometry import TreeGeometry
from .params import HashAlgorithm, VerityParams, hash_algorithm, parse_salt
from .result import VerityResult, veritysetup_report
from .superblock import Superblock
from .table import dm_mod_create, kernel_table
from .verifier import params_from_superblock, read_superblock, verify

__all__ = [
    "DeviceError",
    "HashAlgorithm",
    "HashAreaCorruptError",
    "ParameterError",
    "RootHashMismatchError",
    "Superblock",
    "SuperblockError",
    "TreeGeometry",
    "VerificationError",
    "VerityError",
    "VerityParams",
    "VerityResult",
    "dm_mod_create",
    "format_hash_tree",
    "hash_algorithm",
    "kernel_table",
    "params_from_superblock",
    "parse_salt",
    "read_superblock",
    "verify",
    "veritysetup_report",
]
