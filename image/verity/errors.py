"""Typed errors of the dm-verity builder and verifier.

Everything derives from :class:`VerityError`, so callers (the image builder, the CLI) fail closed
on one type. The sub-types follow veritysetup's failure classes, and the CLI maps them to its exit
codes (1 for bad parameters, I/O and a wrong root hash; 2 for a corrupt data or hash area):

* :class:`ParameterError`     a parameter is out of range or malformed (nothing was written);
* :class:`DeviceError`        a data or hash file cannot be opened, is too small, or overlaps;
* :class:`SuperblockError`    the bytes at the hash offset are not a valid verity superblock;
* :class:`RootHashMismatchError`   the tree is consistent but its root differs from the expected one;
* :class:`HashAreaCorruptError`    a data block or hash block does not match the stored tree.

Messages carry only public data (paths, offsets, parameter values): verity has no secrets.
"""

from __future__ import annotations

__all__ = [
    "DeviceError",
    "HashAreaCorruptError",
    "ParameterError",
    "RootHashMismatchError",
    "SuperblockError",
    "VerificationError",
    "VerityError",
]


class VerityError(Exception):
    """Base class of every error raised by :mod:`image.verity`."""


class ParameterError(VerityError, ValueError):
    """A verity parameter is invalid: names the parameter, the value found and what is allowed."""

    def __init__(self, parameter: str, found: object, expected: str) -> None:
        self.parameter = parameter
        self.found = found
        self.expected = expected
        super().__init__(f"invalid {parameter}: {found!r} (expected {expected})")


class DeviceError(VerityError, OSError):
    """A data or hash file cannot be used (missing, unreadable, too small, overlapping areas)."""


class SuperblockError(VerityError):
    """The hash device holds no valid verity superblock at the given offset."""

    def __init__(self, field: str, offset: int, expected: str, found: object) -> None:
        self.field = field
        self.offset = offset
        self.expected = expected
        self.found = found
        super().__init__(
            f"verity superblock {field} at byte {offset}: expected {expected}, found {found!r}"
        )


class VerificationError(VerityError):
    """Base of the two verification failures (data/hash area corrupt, wrong root hash)."""


class RootHashMismatchError(VerificationError):
    """The hash tree is internally consistent but its root is not the expected one."""

    def __init__(self, expected: bytes, computed: bytes) -> None:
        self.expected = expected
        self.computed = computed
        super().__init__(f"root hash mismatch: expected {expected.hex()}, computed {computed.hex()}")


class HashAreaCorruptError(VerificationError):
    """A stored digest or a zero spare area differs from the one computed from the level below.

    ``kind`` is ``"digest"`` (``position`` is the byte offset, in the data file for level 0 or in
    the hash file above, of the block whose digest is wrong) or ``"spare"`` (``position`` is the
    byte offset in the hash file where a non-zero padding run starts) — the same positions
    veritysetup prints. ``level`` is the tree level whose stored block failed (0 = leaves).
    """

    def __init__(self, kind: str, position: int, level: int) -> None:
        self.kind = kind
        self.position = position
        self.level = level
        what = "Verification failed" if kind == "digest" else "Spare area is not zeroed"
        super().__init__(f"{what} at position {position} (tree level {level})")
