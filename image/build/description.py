"""The JSON image description that the measurement and demo steps consume.

Schema (paths are relative to the JSON file)::

    {"kernel": "vmlinuz", "initrd": "initrd.img", "disk": "rootfs.img",
     "cmdline": "<full kernel command line incl. root hash>", "root_hash": "<hex>", "salt": "<hex>",
     "rootfs": "erofs", "verity": {...}, "initdata": null | "initdata.img",
     "build_seconds": N, "inputs_digest": "<hex>"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BuildError

__all__ = ["DESCRIPTION_NAME", "ImageDescription", "VerityParams", "verity_table"]

DESCRIPTION_NAME = "image.json"


@dataclass(frozen=True, slots=True)
class VerityParams:
    hash_algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    hash_offset: int  # bytes; the tree is appended to the data on the same disk
    hash_start_block: int
    format: int
    superblock: bool
    data_device: str
    hash_device: str


def verity_table(v: VerityParams, root_hash: str, salt: str) -> str:
    sectors = v.data_blocks * v.data_block_size // 512
    return (f"0 {sectors} verity {v.format} {v.data_device} {v.hash_device} {v.data_block_size} "
            f"{v.hash_block_size} {v.data_blocks} {v.hash_start_block} {v.hash_algorithm} "
            f"{root_hash} {salt or '-'}")


@dataclass(frozen=True, slots=True)
class ImageDescription:
    kernel: str
    initrd: str
    disk: str
    cmdline: str
    root_hash: str
    salt: str
    rootfs: str
    verity: VerityParams
    initdata: str | None
    build_seconds: float
    inputs_digest: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return json.dumps(d, indent=2, sort_keys=False) + "\n"

    @classmethod
    def load(cls, path: Path) -> ImageDescription:
        try:
            d = json.loads(path.read_text())
            verity = VerityParams(**d.pop("verity"))
            known = {k: d.pop(k) for k in ("kernel", "initrd", "disk", "cmdline", "root_hash", "salt",
                                           "rootfs", "initdata", "build_seconds", "inputs_digest")}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BuildError(f"{path}: not an image description: {e}") from e
        return cls(verity=verity, extra=d, **known)

    def path(self, base: Path, name: str) -> Path:
        return base / name

