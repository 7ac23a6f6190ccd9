"""Container image layers as read-only block images for the pod VM (host-EROFS mode).

Each layer becomes ``<cache>/<algorithm>-<hex>.erofs``: the layer alone (its whiteouts kept as
overlayfs markers, so the guest can stack the layers with overlayfs), as an erofs image built
deterministically (fixed timestamp, UUID derived from the layer digest, entries as in the tar),
followed by its dm-verity hash tree (4 KiB blocks, sha256, fixed salt, no superblock). The root
hash and geometry are the pin the policy carries (``erofs_layers`` in policy_data) and the
``X-kata.dmverity.*`` options the runtime sends; both are computed here only, so the shim that
attaches the layer and the generator that pins it can never disagree.

Unpacking keeps ownership and device nodes, so this runs as root (the node's shim does; on a
workstation, generate host-EROFS pins as root or take them from the node).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from common.files import atomic_write
from image.build.erofs import run
from image.verity import VerityParams, format_hash_tree
from oci import Digest, LayerSource, unpack_image

__all__ = ["BLOCK", "LAYER_SALT", "LayerImage", "build_layer_image", "layer_uuid"]

log = logging.getLogger("image.layers")
BLOCK = 4096
LAYER_SALT = bytes(32)  # fixed: the root hash must depend on the layer's bytes only
EPOCH = 0


def layer_uuid(layer_digest: str) -> str:
    """The filesystem UUID of a layer image: a name-based UUID of its (compressed) blob digest."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"erofs:blobs/{layer_digest}"))


@dataclass(frozen=True)
class LayerImage:
    """A built layer: the image file and what the policy pins for it."""

    digest: str  # the layer blob's digest
    path: str
    roothash: str
    salt: str
    hashoffset: int  # bytes of erofs data; the tree follows
    data_blocks: int

    def pin(self) -> dict[str, str]:
        """The policy's pin, in erofs_layers.rego's terms (option values as strings)."""
        return {
            "roothash": self.roothash,
            "salt": self.salt,
            "hashoffset": str(self.hashoffset),
            "blocksize": str(BLOCK),
            "hashsize": str(BLOCK),
            "algorithm": "sha256",
            "hashtype": "1",
            "no-superblock": "true",
        }

    def options(self) -> list[str]:
        """The storage options the runtime sends for this layer (Kata's X-kata.dmverity.*)."""
        return ["X-kata.dmverity-enabled=true", *(f"X-kata.dmverity.{k}={v}" for k, v in self.pin().items())]


def _meta_path(cache: Path, digest: Digest) -> Path:
    return cache / f"{digest.algorithm}-{digest.hex}.json"


def build_layer_image(layer: LayerSource, cache: Path) -> LayerImage:
    """The layer image for ``layer`` (its blob already verified against ``layer.name``), built once per
    layer digest into ``cache`` (concurrent builders of one layer race harmlessly: same bytes)."""
    digest = Digest.parse(layer.name)
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    meta = _meta_path(cache, digest)
    image_path = cache / f"{digest.algorithm}-{digest.hex}.erofs"
    try:
        cached = LayerImage(**json.loads(meta.read_text(encoding="utf-8")))
        if Path(cached.path) == image_path and image_path.is_file():
            return cached
    except (OSError, ValueError, TypeError):
        pass
    work = Path(tempfile.mkdtemp(prefix=f".{digest.hex[:12]}-", dir=cache))
    try:
        stage = unpack_image([layer], work / "tree", overlay=True)
        image = work / "layer.erofs"
        run(
            [
                "mkfs.erofs",
                "--quiet",
                f"-T{EPOCH}",
                f"-U{layer_uuid(str(digest))}",
                "-x1",
                str(image),
                str(stage),
            ]
        )
        size = image.stat().st_size
        if size % BLOCK:
            with open(image, "r+b") as f:
                f.truncate(size + BLOCK - size % BLOCK)
            size = image.stat().st_size
        params = VerityParams(
            hash_name="sha256",
            data_block_size=BLOCK,
            hash_block_size=BLOCK,
            salt=LAYER_SALT,
            hash_type=1,
            superblock=False,
            data_blocks=size // BLOCK,
            hash_offset=size,
        )
        result = format_hash_tree(image, image, params, workers=1)
        with open(image, "rb") as f:
            os.fsync(f.fileno())
        os.replace(image, image_path)
        built = LayerImage(
            str(digest), str(image_path), result.root_hash.hex(), LAYER_SALT.hex(), size, size // BLOCK
        )
        atomic_write(meta, json.dumps(asdict(built), sort_keys=True).encode("utf-8"), mode=0o644)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(
        "event=layer_image_built layer=%s roothash=%s bytes=%d", digest, built.roothash, built.hashoffset
    )
    return built
