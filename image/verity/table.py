"""Kernel device-mapper table lines for a verity target, and the ``dm-mod.create=`` parameter.

Table (Linux ``Documentation/admin-guide/device-mapper/verity.rst``)::

    <start> <sectors> verity <version> <data_dev> <hash_dev> <data_block_size> <hash_block_size>
    <num_data_blocks> <hash_start_block> <algorithm> <root_digest> <salt|-> [<#opt> <opt>...]

``dm-mod.create=<name>,<uuid>,<minor>,<flags>,<table>`` (``dm-init.rst``) needs device-mapper
built into the kernel; Kata writes it as ``dm-mod.create="dm-verity,,,ro,<table>"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import ParameterError
from .result import VerityResult

__all__ = ["OPTIONAL_FLAGS", "dm_mod_create", "kernel_table"]

SECTOR = 512
# Optional arguments that take no value; others (use_fec_from_device ..., root_hash_sig_key_desc
# ...) are passed pre-split in ``optional`` and counted word by word, as the kernel counts them.
OPTIONAL_FLAGS = frozenset({
    "ignore_corruption", "restart_on_corruption", "panic_on_corruption", "restart_on_error",
    "panic_on_error", "ignore_zero_blocks", "check_at_most_once", "try_verify_in_tasklet",
})
# A device is a path or major:minor; nothing that could break the table or the command line.
_DEVICE_RE = re.compile(r"(/[A-Za-z0-9._/+-]+|\d+:\d+)")
_WORD_RE = re.compile(r"[A-Za-z0-9._:/+-]+")
_NAME_RE = re.compile(r"[A-Za-z0-9._+-]{1,127}")


def kernel_table(result: VerityResult, data_dev: str, hash_dev: str, *,
                 optional: Sequence[str] = ()) -> str:
    """The one-line verity table for ``result`` with the given data and hash devices.

    The hash start block is the result's (superblock and hash offset taken into account), so the
    same call serves a separate hash partition (start 0) and a tree appended to the data device.
    """
    for what, dev in (("data device", data_dev), ("hash device", hash_dev)):
        if not _DEVICE_RE.fullmatch(dev):
            raise ParameterError(what, dev, "an absolute path or major:minor")
    for word in optional:
        if not _WORD_RE.fullmatch(word):
            raise ParameterError("optional argument", word, "a word of [A-Za-z0-9._:/+-]")
    g = result.geometry
    p = result.params
    sectors = g.data_blocks * g.data_block_size // SECTOR
    fields = [
        "0", str(sectors), "verity", str(p.hash_type), data_dev, hash_dev, str(g.data_block_size),
        str(g.hash_block_size), str(g.data_blocks), str(g.hash_start_block), p.algorithm.name,
        result.root_hex, result.salt_hex,
    ]
    if optional:
        fields += [str(len(optional)), *optional]
    return " ".join(fields)


def dm_mod_create(table: str, *, name: str = "dm-verity", uuid: str = "", minor: str = "",
                  flags: str = "ro") -> str:
    """The kernel command-line parameter that creates the device at boot (quoted, as Kata emits it)."""
    if not _NAME_RE.fullmatch(name):
        raise ParameterError("device name", name, "1-127 characters of [A-Za-z0-9._+-]")
    if uuid and not _NAME_RE.fullmatch(uuid):
        raise ParameterError("device uuid", uuid, "characters of [A-Za-z0-9._+-]")
    if minor and not minor.isdigit():
        raise ParameterError("minor", minor, "decimal digits")
    if flags not in ("ro", "rw"):
        raise ParameterError("flags", flags, "'ro' or 'rw'")
    if any(c in table for c in ',;"\n'):
        raise ParameterError("table", table, "no ',', ';', '\"' or newline")
    return f'dm-mod.create="{name},{uuid},{minor},{flags},{table}"'
