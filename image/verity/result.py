"""What a format run produced, and veritysetup's report of it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ParameterError
from .geometry import TreeGeometry
from .params import VerityParams

__all__ = ["VerityResult", "veritysetup_report"]


@dataclass(frozen=True, slots=True)
class VerityResult:
    """The resolved parameters (salt, UUID and data blocks filled in), the tree shape and the root.

    ``params`` can be handed back to :func:`image.verity.verify` unchanged.
    """

    params: VerityParams
    geometry: TreeGeometry
    root_hash: bytes

    @classmethod
    def describe(cls, params: VerityParams, root_hash: bytes) -> VerityResult:
        """A result for a tree built elsewhere: ``params`` must carry the salt and data block count."""
        if params.salt is None or not params.data_blocks:
            raise ParameterError("parameters", params, "salt and data_blocks set")
        if len(root_hash) != params.algorithm.digest_size:
            raise ParameterError("root hash", root_hash.hex(), f"{params.algorithm.digest_size} bytes")
        geometry = TreeGeometry.compute(
            digest_size=params.algorithm.digest_size, data_block_size=params.data_block_size,
            hash_block_size=params.hash_block_size, hash_type=params.hash_type,
            data_blocks=params.data_blocks, hash_offset=params.hash_offset, superblock=params.superblock)
        return cls(params, geometry, root_hash)

    def to_json(self) -> dict[str, object]:
        """Plain values for an image description file."""
        return {
            "root_hash": self.root_hex, "salt": self.salt.hex(), "hash_algorithm": self.params.algorithm.name,
            "hash_type": self.params.hash_type, "data_block_size": self.params.data_block_size,
            "hash_block_size": self.params.hash_block_size, "data_blocks": self.data_blocks,
            "hash_offset": self.hash_offset, "hash_start_block": self.hash_start_block,
            "hash_blocks": self.hash_blocks, "superblock": self.params.superblock, "uuid": self.uuid,
        }

    @property
    def salt(self) -> bytes:
        return self.params.salt or b""

    @property
    def uuid(self) -> str | None:
        return self.params.uuid if self.params.superblock else None

    @property
    def data_blocks(self) -> int:
        return self.geometry.data_blocks

    @property
    def hash_offset(self) -> int:
        return self.params.hash_offset

    @property
    def hash_start_block(self) -> int:
        """The kernel table's ``<hash_start_block>`` (in hash-block units)."""
        return self.geometry.hash_start_block

    @property
    def hash_blocks(self) -> int:
        return self.geometry.hash_blocks

    @property
    def hash_end(self) -> int:
        """Byte offset just past the tree on the hash device."""
        return self.geometry.hash_end

    @property
    def root_hex(self) -> str:
        return self.root_hash.hex()

    @property
    def salt_hex(self) -> str:
        """Salt as the kernel table and veritysetup print it (``-`` when empty)."""
        return self.salt.hex() or "-"


def veritysetup_report(result: VerityResult, hash_device: str) -> str:
    """The text ``veritysetup format`` (cryptsetup 2.6.1) prints, byte for byte."""
    p = result.params
    lines = [
        f"VERITY header information for {hash_device}",
        f"UUID:            \t{result.uuid or ''}",
        f"Hash type:       \t{p.hash_type}",
        f"Data blocks:     \t{result.data_blocks}",
        f"Data block size: \t{p.data_block_size}",
        f"Hash blocks:     \t{result.hash_blocks}",
        f"Hash block size: \t{p.hash_block_size}",
        f"Hash algorithm:  \t{p.hash_name}",
        f"Salt:            \t{result.salt_hex}",
        f"Root hash:      \t{result.root_hex}",
    ]
    if p.hash_offset == 0:
        # cryptsetup prints it only without an offset: a dump cannot know where the area starts.
        lines.append(f"Hash device size: \t{result.hash_end} [bytes]")
    return "\n".join(lines) + "\n"
