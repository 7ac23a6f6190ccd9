"""Local OCI image layouts (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``): reader and writer.

The reader is a blob source like the registry client: every blob it hands out has been checked
against its descriptor. The writer builds layouts from bytes (the test images, the benchmark), so
no outside tool is needed to make an image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.files import atomic_write, atomic_write_text

from . import mediatypes as mt
from .cache import VerifyingWriter
from .digest import Digest
from .errors import LayoutError
from .manifest import LINUX_AMD64, MAX_MANIFEST_BYTES, Descriptor, Platform
from .reference import Reference

__all__ = ["LAYOUT_VERSION", "REF_NAME", "LayoutSource", "LayoutWriter"]

LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


class LayoutSource:
    """Blobs of one local layout, served by digest with the same checks as the registry client."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            marker = json.loads((root / "oci-layout").read_text())
        except (OSError, ValueError) as exc:
            raise LayoutError(str(root), f"no readable oci-layout file: {exc}") from None
        if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise LayoutError(str(root), f"imageLayoutVersion must be {LAYOUT_VERSION!r}")

    def _blob(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def index_bytes(self) -> bytes:
        try:
            return (self.root / "index.json").read_bytes()[:MAX_MANIFEST_BYTES + 1]
        except OSError as exc:
            raise LayoutError(str(self.root), f"no readable index.json: {exc}") from None

    def fetch_manifest(self, ref: Reference, digest: Digest) -> tuple[bytes, str | None]:
        try:
            with open(self._blob(digest), "rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise LayoutError(str(self.root), f"no blob {digest}") from None
        digest.verify(data)
        return data, None

    def fetch_blob(self, ref: Reference, desc: Descriptor, sink: VerifyingWriter) -> None:
        try:
            with open(self._blob(desc.digest), "rb") as f:
                while chunk := f.read(CHUNK):
                    sink.write(chunk)
        except FileNotFoundError:
            raise LayoutError(str(self.root), f"no blob {desc.digest}") from None


class LayoutWriter:
    """Writes blobs, manifests and the index of a layout (content-addressed; deterministic)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": LAYOUT_VERSION}))
        self.manifests: list[Descriptor] = []

    def add_blob(self, data: bytes, media_type: str, **extra: Any) -> Descriptor:
        digest = Digest.of(data)
        path = self.root / "blobs" / digest.algorithm / digest.hex
        atomic_write(path, data, mode=0o644)
        return Descriptor(media_type, digest, len(data), **extra)

    def add_json(self, doc: Mapping[str, Any], media_type: str, **extra: Any) -> Descriptor:
        return self.add_blob(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), media_type,
                             **extra)

    def add_image(self, layers: Sequence[tuple[bytes, str, Digest]], *,
                  config: Mapping[str, Any] | None = None, platform: Platform = LINUX_AMD64,
                  tag: str | None = None, docker: bool = False) -> Descriptor:
        """Add an image: ``layers`` are (blob bytes, layer media type, diff_id) lowest first."""
        cfg = {"architecture": platform.architecture, "os": platform.os, "config": dict(config or {}),
               "rootfs": {"type": "layers", "diff_ids": [str(d) for _, _, d in layers]}}
        config_desc = self.add_json(cfg, mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG)
        layer_descs = [self.add_blob(data, media) for data, media, _ in layers]
        manifest_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
        doc = {"schemaVersion": 2, "mediaType": manifest_type, "config": config_desc.to_json(),
               "layers": [d.to_json() for d in layer_descs]}
        desc = self.add_json(doc, manifest_type, platform=platform,
                             annotations={REF_NAME: tag} if tag else {})
        self.manifests.append(desc)
        return desc

    def add_index(self, manifests: Sequence[Descriptor], *, docker: bool = False,
                  tag: str | None = None) -> Descriptor:
        media = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
        return self.add_json({"schemaVersion": 2, "mediaType": media,
                              "manifests": [m.to_json() for m in manifests]}, media,
                             annotations={REF_NAME: tag} if tag else {})

    def finish(self, entries: Sequence[Descriptor] | None = None) -> None:
        """Write index.json listing ``entries`` (default: every image added)."""
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
               "manifests": [m.to_json() for m in (self.manifests if entries is None else entries)]}
        atomic_write_text(self.root / "index.json", json.dumps(doc, sort_keys=True, indent=1), mode=0o644)
