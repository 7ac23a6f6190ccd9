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
from image.layers import build_layer_image
from oci import (
    BlobCache,
    BlobSource,
    Descriptor,
    Digest,
    DigestVerifier,
    ImageConfig,
    LayerSource,
    LayoutSource,
    OciError,
    Reference,
    RegistryClient,
    RegistryConfig,
    decompressed,
    pull_image,
    resolve_image,
)
from oci import mediatypes as mt

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
            # An uncompressed layer is seekable: only the headers are read, file data is skipped.
            seekable = layer.compression == ""
            with tarfile.open(fileobj=stream, mode="r:" if seekable else "r|") as tar:
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
        self,
        cache_dir: Path,
        *,
        registry: RegistryConfig | None = None,
        layout: Path | None = None,
        layer_images: Path | None = None,
    ) -> None:
        self.cache = BlobCache(cache_dir / "blobs")
        self.users_dir = cache_dir / "users"
        self.users_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.layout = layout
        self.source: BlobSource = LayoutSource(layout) if layout is not None else RegistryClient(registry)
        self.layers_scanned = 0  # layers read this run (0 on a warm cache)
        self.layer_images = layer_images  # host EROFS mode: build each layer's image, pin its root hash

    def _users_path(self, digest: Digest) -> Path:
        return self.users_dir / f"{digest.algorithm}-{digest.hex}.json"

    def _cached_users(self, digest: Digest) -> dict[str, Any] | None:
        try:
            cached: dict[str, Any] = json.loads(self._users_path(digest).read_text(encoding="utf-8"))
            return cached
        except (OSError, ValueError):
            return None

    def _scan(self, layer: LayerSource) -> dict[str, Any]:
        found = scan_layer(layer)
        self.layers_scanned += 1
        path = self._users_path(Digest.parse(layer.name))
        atomic_write(path, json.dumps(found, sort_keys=True).encode("utf-8"))
        return found

    def _layout_layer(self, desc: Descriptor) -> LayerSource:
        """A layer of the local layout, verified where it lies (the layout is content-addressed
        already: copying it into the cache would only add a write of every byte)."""
        assert self.layout is not None
        path = self.layout / "blobs" / desc.digest.algorithm / desc.digest.hex
        verifier = DigestVerifier(desc.digest, desc.size)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    verifier.update(view[:n])
        except FileNotFoundError:
            raise ImageError(str(desc.digest), "(layer)", f"not in the layout {self.layout}") from None
        verifier.finish()
        return LayerSource(str(desc.digest), mt.LAYER_COMPRESSION[desc.media_type], path)

    def _from_layout(self, ref: Reference) -> tuple[Digest, ImageConfig, list[dict[str, Any]], list[str]]:
        manifest, config = resolve_image(self.source, self.cache, ref)
        found, pins = [], []
        for desc in manifest.layers:
            cached = self._cached_users(desc.digest)
            if cached is not None and self.layer_images is None:
                found.append(cached)  # warm: the layer is not read at all
                continue
            layer = self._layout_layer(desc)
            found.append(cached if cached is not None else self._scan(layer))
            if self.layer_images is not None:
                pins.append(json.dumps(build_layer_image(layer, self.layer_images).pin(), sort_keys=True))
        return ref.require_digest(), config, found, pins

    def _from_registry(self, ref: Reference) -> tuple[Digest, ImageConfig, list[dict[str, Any]], list[str]]:
        image = pull_image(self.source, self.cache, ref)
        found, pins = [], []
        for layer in image.layers:
            cached = self._cached_users(Digest.parse(layer.name))
            found.append(cached if cached is not None else self._scan(layer))
            if self.layer_images is not None:
                pins.append(json.dumps(build_layer_image(layer, self.layer_images).pin(), sort_keys=True))
        return image.digest, image.config, found, pins

    def resolve(self, reference: str) -> ImageInfo:
        try:
            ref = Reference.parse(reference)
            if ref.digest is None:
                raise ImageError(reference, "image", "has no digest", "a reference pinned by digest")
            digest, config, layers, pins = self._from_layout(ref) if self.layout else self._from_registry(ref)
        except OciError as exc:
            raise ImageError(reference, "image", str(exc)) from exc
        users: dict[str, str] = {"passwd": "", "group": ""}
        for found in layers:
            for key, value in found.items():
                users[key] = "" if value == WHITEOUT else str(value)
        settings = config.raw.get("config") or {}
        log.info("event=image_resolved ref=%s digest=%s layers=%d", reference, digest, len(layers))
        erofs = tuple(json.loads(pin) for pin in pins)
        return ImageInfo(reference, str(digest), dict(settings), users["passwd"], users["group"], erofs)
