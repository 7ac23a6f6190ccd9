"""OCI images: digests, references, manifests, registry and layout sources, cache, unpacking.

One module tree for every consumer of images: the guest puller (``guest.backend.guestpull``) and
the policy generator, so the digest a policy pins and the digest the guest checks come from the
same parser.

- :mod:`.digest`, :mod:`.reference`: ``algorithm:hex`` digests; ``name[:tag]@digest`` references.
- :mod:`.manifest`: sans-IO parsing of OCI index/manifest/config and Docker schema 2; platform choice.
- :mod:`.registry`: the distribution API client (token and basic auth, TLS rules as Docker's).
- :mod:`.layout`: local OCI layouts (reader and writer).
- :mod:`.cache`: per-digest blob cache with atomic, concurrent-safe fills.
- :mod:`.pull`: index → manifest → config → layers, each checked against its parent.
- :mod:`.unpack`: layers into a root filesystem without escaping it (whiteouts, links, devices).
- :mod:`.policy`: the Rego rule that ties a guest-pull storage to the pinned digest.
"""

from __future__ import annotations

from .cache import BlobCache
from .digest import Digest, DigestVerifier
from .errors import (
    BlobMismatchError,
    DigestError,
    ImageFormatError,
    LayoutError,
    NoSpaceError,
    OciError,
    PlatformError,
    ReferenceError,
    RegistryError,
    TransportPolicyError,
    UnpackError,
)
from .layout import LayoutSource, LayoutWriter
from .manifest import Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform
from .pull import BlobSource, PulledImage, pull_image, resolve_image, unpack_pulled
from .reference import Reference
from .registry import Credentials, RegistryClient, RegistryConfig
from .unpack import LayerSource, Limits, decompressed, unpack_image

__all__ = [
    "BlobCache",
    "BlobMismatchError",
    "BlobSource",
    "Credentials",
    "Descriptor",
    "Digest",
    "DigestError",
    "DigestVerifier",
    "ImageConfig",
    "ImageFormatError",
    "ImageIndex",
    "ImageManifest",
    "LayerSource",
    "LayoutError",
    "LayoutSource",
    "LayoutWriter",
    "Limits",
    "NoSpaceError",
    "OciError",
    "Platform",
    "PlatformError",
    "PulledImage",
    "Reference",
    "ReferenceError",
    "RegistryClient",
    "RegistryConfig",
    "RegistryError",
    "TransportPolicyError",
    "UnpackError",
    "decompressed",
    "pull_image",
    "resolve_image",
    "unpack_image",
    "unpack_pulled",
]
