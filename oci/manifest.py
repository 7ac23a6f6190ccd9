"""Sans-IO parsing of image indexes, manifests and configs (OCI v1 and Docker schema 2).

Every parser takes the verified bytes of one blob and returns frozen values; nothing here reads a
network or a disk. JSON with duplicate keys is refused (two parsers could otherwise see two
different documents in the same bytes), and so are unknown kinds, wrong schema versions, bad
digests and negative or oversized sizes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import mediatypes as mt
from .digest import Digest
from .errors import DigestError, ImageFormatError, PlatformError

__all__ = [
    "MAX_CONFIG_BYTES", "MAX_MANIFEST_BYTES", "Descriptor", "ImageConfig", "ImageIndex", "ImageManifest",
    "Platform", "parse_config", "parse_manifest", "select_platform",
]

MAX_MANIFEST_BYTES = 4 << 20  # containerd's limit for manifests and indexes
MAX_CONFIG_BYTES = 8 << 20
MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


LINUX_AMD64 = Platform("linux", "amd64")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        return out


@dataclass(frozen=True)
class ImageIndex:
    digest: Digest
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageManifest:
    digest: Digest
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    digest: Digest
    platform: Platform
    diff_ids: tuple[Digest, ...]
    user: str
    env: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str
    volumes: tuple[str, ...]
    raw: Mapping[str, Any]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _load(what: str, data: bytes, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise ImageFormatError(what, f"{len(data)} bytes, more than the {limit}-byte limit")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageFormatError(what, f"not a JSON document: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageFormatError(what, "expected a JSON object")
    return doc


def _str(what: str, doc: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise ImageFormatError(what, f"field {key!r} must be a string, got {value!r:.80}")
    return value


def _strings(what: str, doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageFormatError(what, f"field {key!r} must be a list of strings")
    return tuple(value)


def _platform(what: str, value: Any) -> Platform:
    if not isinstance(value, dict):
        raise ImageFormatError(what, "platform must be an object")
    variant = value.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise ImageFormatError(what, "platform.variant must be a string")
    return Platform(_str(what, value, "os"), _str(what, value, "architecture"), variant or None)


def _descriptor(what: str, value: Any, allowed: frozenset[str] | None = None) -> Descriptor:
    if not isinstance(value, dict):
        raise ImageFormatError(what, "descriptor must be an object")
    media_type = _str(what, value, "mediaType")
    if allowed is not None and media_type not in allowed:
        raise ImageFormatError(what, f"media type {media_type!r}, expected one of {sorted(allowed)}")
    try:
        digest = Digest.parse(value.get("digest"))
    except DigestError as exc:
        raise ImageFormatError(what, str(exc)) from None
    size = value.get("size")
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise ImageFormatError(what, f"size must be a non-negative integer, got {size!r:.40}")
    if value.get("urls"):
        raise ImageFormatError(what, f"{digest} names external URLs; only registry blobs are fetched")
    platform = _platform(what, value["platform"]) if value.get("platform") is not None else None
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise ImageFormatError(what, "annotations must map strings to strings")
    return Descriptor(media_type, digest, size, platform, annotations)


def parse_manifest(data: bytes, digest: Digest, media_type: str | None = None) -> ImageIndex | ImageManifest:
    """An index or a manifest from its (already verified) bytes.

    ``media_type`` is what the parent descriptor or the registry's Content-Type said; when both it
    and the document's own ``mediaType`` are present they must agree.
    """
    what = f"manifest {digest}"
    doc = _load(what, data, MAX_MANIFEST_BYTES)
    if doc.get("schemaVersion") != 2:
        raise ImageFormatError(what, f"schemaVersion {doc.get('schemaVersion')!r}, expected 2")
    own = doc.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise ImageFormatError(what, "mediaType must be a string")
    known = mt.INDEX_TYPES | mt.MANIFEST_TYPES
    if media_type is not None and media_type not in known:
        media_type = None if own is not None else media_type  # a generic Content-Type defers to the body
    if own is not None and media_type is not None and own != media_type:
        raise ImageFormatError(what, f"document says mediaType {own!r}, its descriptor says {media_type!r}")
    kind = own or media_type
    if kind is None:  # OCI allows omitting mediaType; the structure decides
        kind = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if kind not in known:
        raise ImageFormatError(what, f"media type {kind!r}, expected an image index or manifest")
    if kind in mt.INDEX_TYPES:
        if "layers" in doc or "config" in doc:
            raise ImageFormatError(what, "an index must not carry config or layers")
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ImageFormatError(what, "field 'manifests' must be a list")
        manifests = tuple(_descriptor(f"{what} manifests[{i}]", d) for i, d in enumerate(entries))
        return ImageIndex(digest, kind, manifests)
    if "manifests" in doc:
        raise ImageFormatError(what, "a manifest must not carry 'manifests'")
    config = _descriptor(f"{what} config", doc.get("config"), mt.CONFIG_TYPES)
    layer_list = doc.get("layers")
    if not isinstance(layer_list, list):
        raise ImageFormatError(what, "field 'layers' must be a list")
    layers = tuple(_descriptor(f"{what} layers[{i}]", d, frozenset(mt.LAYER_COMPRESSION))
                   for i, d in enumerate(layer_list))
    return ImageManifest(digest, kind, config, layers)


def select_platform(index: ImageIndex, wanted: Platform = LINUX_AMD64) -> Descriptor:
    """The first manifest of the index for ``wanted`` (os and architecture; any variant)."""
    available = []
    for desc in index.manifests:
        if desc.platform is None:
            continue
        available.append(str(desc.platform))
        if (desc.platform.os, desc.platform.architecture) == (wanted.os, wanted.architecture):
            if desc.media_type not in mt.MANIFEST_TYPES:
                raise ImageFormatError(f"image index {index.digest}",
                                       f"entry for {wanted} has media type {desc.media_type!r}, "
                                       "expected an image manifest")
            return desc
    raise PlatformError(str(index.digest), str(wanted), available)


def parse_config(data: bytes, digest: Digest, layer_count: int | None = None) -> ImageConfig:
    """An image config from its verified bytes; ``layer_count`` is checked against rootfs.diff_ids."""
    what = f"image config {digest}"
    doc = _load(what, data, MAX_CONFIG_BYTES)
    platform = Platform(_str(what, doc, "os"), _str(what, doc, "architecture"),
                        doc.get("variant") if isinstance(doc.get("variant"), str) else None)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ImageFormatError(what, "rootfs must be {'type': 'layers', 'diff_ids': [...]}")
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list):
        raise ImageFormatError(what, "rootfs.diff_ids must be a list")
    try:
        diff_ids = tuple(Digest.parse(d) for d in ids)
    except DigestError as exc:
        raise ImageFormatError(what, f"rootfs.diff_ids: {exc}") from None
    if layer_count is not None and len(diff_ids) != layer_count:
        raise ImageFormatError(what, f"{len(diff_ids)} diff_ids for {layer_count} manifest layers")
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise ImageFormatError(what, "config must be an object")
    volumes = cfg.get("Volumes") or {}
    if not isinstance(volumes, dict):
        raise ImageFormatError(what, "config.Volumes must be an object")
    return ImageConfig(
        digest=digest, platform=platform, diff_ids=diff_ids,
        user=_str(what, cfg, "User", ""), env=_strings(what, cfg, "Env"),
        entrypoint=_strings(what, cfg, "Entrypoint"), cmd=_strings(what, cfg, "Cmd"),
        working_dir=_str(what, cfg, "WorkingDir", ""), volumes=tuple(sorted(volumes)), raw=doc,
    )


def descriptors_json(descs: Sequence[Descriptor]) -> list[dict[str, Any]]:
    return [d.to_json() for d in descs]
