"""Kata's ``erofs.multi-layer`` storages: ``X-kata.dmverity.*`` options ↔ :class:`VerityParams`.

The same defaults as the Rego module (``erofs_layers.rego``, shipped next to this file) so the
policy decision and the device the agent creates agree: blocksize/hashsize 4096, sha256, hash
type 1, a superblock unless ``no-superblock=true``, empty salt unless given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from .dm import DeviceMapper
from .errors import PolicyDeniedError, StorageOptionError
from .pci import PCI_PATH_PATTERN, block_device_for_pci_path
from .source import BlockDevice, resolve_source
from .verity import VerityMount, VerityParams, check_pinned, mount_verity

__all__ = [
    "DMVERITY_ENABLED",
    "DRIVER",
    "REGO_MODULE",
    "mount_layer_storage",
    "params_from_options",
    "params_from_pin",
    "pinned_for",
    "rego_module",
    "resolve_layer_source",
]

DRIVER = "erofs.multi-layer"
DMVERITY_ENABLED = "X-kata.dmverity-enabled=true"
PREFIX = "X-kata.dmverity."
KEYS = ("roothash", "salt", "hashoffset", "blocksize", "hashsize", "algorithm", "hashtype", "no-superblock")
DEFAULTS = {"salt": "", "blocksize": "4096", "hashsize": "4096", "algorithm": "sha256", "hashtype": "1",
            "no-superblock": "false"}
REGO_MODULE = "erofs_layers.rego"


def rego_module() -> str:
    """The Rego rule module that pins these options per layer in policy_data."""
    return resources.files(__package__).joinpath(REGO_MODULE).read_text()


def _int(key: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise StorageOptionError(f"{PREFIX}{key}", value, "a decimal integer")
    return int(value)


def _bool(key: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise StorageOptionError(f"{PREFIX}{key}", value, "true or false")
    return value == "true"


def _from_map(values: Mapping[str, str]) -> VerityParams:
    v = {**DEFAULTS, **values}
    if "roothash" not in v or "hashoffset" not in v:
        raise StorageOptionError(f"{PREFIX}roothash/hashoffset", "", "both present")
    return VerityParams(root_hash=v["roothash"], salt=v["salt"],
                        hash_offset=_int("hashoffset", v["hashoffset"]),
                        algorithm=v["algorithm"], hash_type=_int("hashtype", v["hashtype"]),
                        data_block_size=_int("blocksize", v["blocksize"]),
                        hash_block_size=_int("hashsize", v["hashsize"]),
                        superblock=not _bool("no-superblock", v["no-superblock"]))


def params_from_options(options: Sequence[str]) -> VerityParams | None:
    """The verity parameters of a storage's options; None when dm-verity is not enabled.

    Unknown ``X-kata.dmverity.*`` keys and repeated keys are refused (attacker-controlled input).
    """
    if DMVERITY_ENABLED not in options:
        if any(o.startswith(PREFIX) for o in options):
            raise StorageOptionError("X-kata.dmverity-enabled", "", "true when dm-verity options are given")
        return None
    values: dict[str, str] = {}
    for opt in options:
        if not opt.startswith(PREFIX):
            continue
        key, sep, value = opt[len(PREFIX):].partition("=")
        if not sep or key not in KEYS:
            raise StorageOptionError(opt, value, f"one of {PREFIX}{{{','.join(KEYS)}}}=<value>")
        if key in values:
            raise StorageOptionError(opt, value, "each option at most once")
        values[key] = value
    return _from_map(values)


def params_from_pin(layer: Mapping[str, str]) -> VerityParams:
    """A layer pinned in ``policy_data.containers[_].erofs_layers`` (option spellings as keys)."""
    unknown = set(layer) - set(KEYS)
    if unknown:
        raise StorageOptionError("erofs_layers", ",".join(sorted(unknown)), f"keys among {KEYS}")
    return _from_map({k: str(v) for k, v in layer.items()})


def pinned_for(requested: VerityParams, pinned_layers: Sequence[Mapping[str, str]]) -> VerityParams:
    """The pinned layer the request claims (same root hash); PolicyDeniedError if none.

    Only the root hash selects the candidate; :func:`~.verity.check_pinned` then requires every
    other field to be equal as well, so a request cannot mix fields of two pinned layers.
    """
    candidates = [params_from_pin(layer) for layer in pinned_layers]
    for pin in candidates:
        if pin.root_hash == requested.root_hash:
            return pin
    raise PolicyDeniedError({"root_hash": (requested.root_hash, sorted(p.root_hash for p in candidates))})


def mount_layer_storage(driver: str, source: str, options: Sequence[str], mount_point: Path,
                        pinned_layers: Sequence[Mapping[str, str]],
                        dm: DeviceMapper | None = None) -> VerityMount:
    """An ``erofs.multi-layer`` storage with dm-verity, as kata's agent would mount it, but only with
    parameters pinned in ``policy_data`` (``containers[_].erofs_layers``) and only over the block
    device ``source`` (the request's string) resolves to (:func:`~.source.resolve_source`)."""
    if driver != DRIVER:
        raise StorageOptionError("driver", driver, DRIVER)
    requested = params_from_options(options)
    if requested is None:
        raise PolicyDeniedError({"X-kata.dmverity-enabled": ("absent", "true")})
    pinned = pinned_for(requested, pinned_layers)
    check_pinned(requested, pinned)  # the policy's verdict first; then the source is resolved
    return mount_verity(resolve_layer_source(source), requested, pinned, mount_point, dm=dm)


def resolve_layer_source(source: str) -> BlockDevice:
    """A layer's source: a boot disk's ``/dev/vdX`` or a hotplugged disk's Kata PCI path (waited for)."""
    if isinstance(source, str) and re.fullmatch(PCI_PATH_PATTERN, source):
        return block_device_for_pci_path(source)
    return resolve_source(source)
