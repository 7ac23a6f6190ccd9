"""Pulling an image by digest: index → platform manifest → config → layers, all verified, cached.

One code path for every consumer: the guest puller unpacks the layers it returns, the policy
generator reads the config; both get the digest they pin or check from :class:`Reference`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import mediatypes as mt
from .cache import BlobCache, VerifyingWriter
from .digest import Digest
from .errors import ImageFormatError, PlatformError
from .manifest import (
    LINUX_AMD64,
    MAX_CONFIG_BYTES,
    Descriptor,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_config,
    parse_manifest,
    select_platform,
)
from .reference import Reference
from .unpack import LayerSource, Limits, unpack_image

__all__ = ["BlobSource", "PulledImage", "pull_image", "resolve_image", "unpack_pulled"]

log = logging.getLogger("oci.pull")


class BlobSource(Protocol):
    def fetch_manifest(self, ref: Reference, digest: Digest) -> tuple[bytes, str | None]: ...

    def fetch_blob(self, ref: Reference, desc: Descriptor, sink: VerifyingWriter) -> None: ...


@dataclass(frozen=True)
class PulledImage:
    reference: Reference
    digest: Digest  # the pinned digest (index or manifest)
    manifest: ImageManifest
    config: ImageConfig
    layers: tuple[LayerSource, ...]
    fetched: int  # layers this pull had to fetch (0 when all were cached)


def _blob(source: BlobSource, cache: BlobCache, ref: Reference, desc: Descriptor) -> tuple[Path, bool]:
    return cache.ensure(desc, lambda d, sink: source.fetch_blob(ref, d, sink))


def resolve_image(source: BlobSource, cache: BlobCache, ref: Reference,
                  platform: Platform = LINUX_AMD64) -> tuple[ImageManifest, ImageConfig]:
    """The platform manifest and config of the image ``ref`` pins (a digest is required)."""
    digest = ref.require_digest()
    data, content_type = source.fetch_manifest(ref, digest)
    doc = parse_manifest(data, digest, content_type)
    if isinstance(doc, ImageIndex):
        desc = select_platform(doc, platform)
        data, _ = source.fetch_manifest(ref, desc.digest)
        desc.digest.verify(data, desc.size)
        doc = parse_manifest(data, desc.digest, desc.media_type)
        if isinstance(doc, ImageIndex):
            raise ImageFormatError(f"image index {digest}", "nested indexes are not supported")
    manifest = doc
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise ImageFormatError(f"manifest {manifest.digest}", f"config of {manifest.config.size} bytes")
    _blob(source, cache, ref, manifest.config)
    config = parse_config(cache.read(manifest.config), manifest.config.digest, len(manifest.layers))
    if (config.platform.os, config.platform.architecture) != (platform.os, platform.architecture):
        raise PlatformError(str(manifest.digest), str(platform), [str(config.platform)])
    return manifest, config


def pull_image(source: BlobSource, cache: BlobCache, ref: Reference, *, platform: Platform = LINUX_AMD64,
               parallel: int = 3) -> PulledImage:
    """Resolve ``ref`` and make every layer present (verified) in ``cache``."""
    started = time.monotonic()
    manifest, config = resolve_image(source, cache, ref, platform)
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="oci-pull") as pool:
        results = list(pool.map(lambda d: _blob(source, cache, ref, d), manifest.layers))
    # the descriptor goes along: the blob is checked again as it is unpacked (the cache's disk may
    # have changed since it was verified)
    layers = tuple(LayerSource(str(d.digest), mt.LAYER_COMPRESSION[d.media_type], path, d.digest, d.size)
                   for d, (path, _) in zip(manifest.layers, results, strict=True))
    fetched = sum(1 for _, new in results if new)
    log.info("event=image_pulled ref=%s layers=%d fetched=%d seconds=%.3f", ref, len(layers), fetched,
             time.monotonic() - started)
    return PulledImage(ref, ref.require_digest(), manifest, config, layers, fetched)


def unpack_pulled(image: PulledImage, dest: Path, *, limits: Limits | None = None) -> Path:
    return unpack_image(image.layers, dest, limits=limits)
