"""Images for the generator from a registry or a local OCI layout, through the same ``oci`` code the
guest puller uses (so the digest a policy pins is parsed and checked exactly as the guest checks it).

Every blob is verified against its descriptor and cached per digest; each layer's ``/etc/passwd`` and
``/etc/group`` (or their whiteouts) are remembered per layer digest, so a warm run reads no layer.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path
from typing import Any

from common.files import atomic_write
from oci import (
    BlobCache,
    Digest,
    LayoutSource,
    OciError,
    Reference,
    RegistryClient,
    RegistryConfig,
    pull_image,
)
from oci.pull import BlobSource
from oci.unpack import LayerSource, decompressed

from .errors import ImageError
from .images import ImageInfo

log = logging.getLogger("genpolicy.images")

MAX_USER_FILE = 1 << 20  # a passwd or group file larger than this is not a plausible one
_FILES = {"etc/passwd": "passwd", "etc/group": "group"}
WHITEOUT = {"whiteout": True}


def _normal(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name


def scan_layer(layer: LayerSource) -> dict[str, Any]:
    """``{"passwd": text | WHITEOUT, "group": ...}`` for what this layer sets (absent keys: untouched)."""
    found: dict[str, Any] = {}
    with open(layer.path, "rb") as raw, decompressed(raw, layer.compression) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = _normal(member.name)
                    if name in ("etc/.wh..wh..opq", ".wh.etc"):
                        found = {"passwd": WHITEOUT, "group": WHITEOUT}
                    elif name in ("etc/.wh.passwd", "etc/.wh.group"):
                        found[name[len("etc/.wh.") :]] = WHITEOUT
                    elif name in _FILES and member.isreg():
                        if member.size > MAX_USER_FILE:
                            raise ImageError(
                                layer.name, name, f"{member.size} bytes", f"at most {MAX_USER_FILE}"
                            )
                        data = tar.extractfile(member)
                        text = data.read().decode("utf-8", "replace") if data else ""
                        found[_FILES[name]] = text
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ImageError(layer.name, "(layer)", f"not a readable tar: {exc}") from exc
    return found


class OciImageSource:
    """Resolve pinned references from a registry (or one local OCI layout) into ``ImageInfo``."""

    def __init__(
        self, cache_dir: Path, *, registry: RegistryConfig | None = None, layout: Path | None = None
    ) -> None:
        self.cache = BlobCache(cache_dir / "blobs")
        self.users_dir = cache_dir / "users"
        self.users_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.source: BlobSource = LayoutSource(layout) if layout is not None else RegistryClient(registry)
        self.layers_scanned = 0  # layers read this run (0 on a warm cache)

    def _layer_users(self, layer: LayerSource) -> dict[str, Any]:
        digest = Digest.parse(layer.name)
        path = self.users_dir / f"{digest.algorithm}-{digest.hex}.json"
        try:
            cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return cached
        except (OSError, ValueError):
            pass
        found = scan_layer(layer)
        self.layers_scanned += 1
        atomic_write(path, json.dumps(found, sort_keys=True).encode("utf-8"))
        return found

    def resolve(self, reference: str) -> ImageInfo:
        try:
            ref = Reference.parse(reference)
            if ref.digest is None:
                raise ImageError(reference, "image", "has no digest", "a reference pinned by digest")
            image = pull_image(self.source, self.cache, ref)
        except OciError as exc:
            raise ImageError(reference, "image", str(exc)) from exc
        users: dict[str, str] = {"passwd": "", "group": ""}
        for layer in image.layers:
            for key, value in self._layer_users(layer).items():
                users[key] = "" if value == WHITEOUT else str(value)
        config = image.config.raw.get("config") or {}
        log.info(
            "event=image_resolved ref=%s digest=%s layers=%d", reference, image.digest, len(image.layers)
        )
        return ImageInfo(reference, str(image.digest), dict(config), users["passwd"], users["group"])
