"""Kata's ``image_guest_pull`` storage: the workload image pulled by digest inside the guest.

The storage carries the image reference in ``source`` and, in the driver option
``image_guest_pull=<JSON {"metadata": {<container annotations>}}>``, the CRI annotations. The
measured policy (oci/guest_pull.rego) already tied the source, the annotations and the rootfs path
to the digest it pins; this module checks the same facts again before a byte is fetched
(defense in depth: a policy without the rule must not make the guest pull a tag), then resolves
index → linux/amd64 manifest → config → layers over the distribution API with every blob checked
against its parent (oci.pull), and unpacks the layers into ``<bundle>/rootfs`` in the VM's
encrypted memory, all or nothing (oci.unpack). Layers are cached per digest in ``cache_dir``, so two
containers of one image fetch each layer once.

Registry settings and credentials: the measured initdata entry ``imagepuller.toml``
(``/run/measured-cfg/imagepuller.toml``) if present, else Contrast's unmeasured host-supplied file
``/run/insecure-cfg/imagepuller.toml``. The unmeasured file can only affect availability (a wrong
password, a refused host): the digest check makes the content independent of it. Secrets are never
logged and never appear in an error text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oci import (
    BlobCache,
    Credentials,
    Digest,
    Limits,
    OciError,
    Reference,
    RegistryClient,
    RegistryConfig,
    pull_image,
    unpack_pulled,
)

from .layout import check_id

__all__ = [
    "MEASURED_CONFIG", "UNMEASURED_CONFIG", "GuestPullError", "GuestPullRequest", "load_registry_config",
    "parse_storage", "pull_guest_image",
]

log = logging.getLogger("guest.backend.guestpull")

DRIVER = "image_guest_pull"
GUEST_RUN = Path("/run/kata-containers")
MEASURED_CONFIG = Path("/run/measured-cfg/imagepuller.toml")
UNMEASURED_CONFIG = Path("/run/insecure-cfg/imagepuller.toml")
IMAGE_NAME_KEYS = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName")
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")


class StorageLike(Protocol):
    """The fields of agent_pb2.Storage this module reads."""

    @property
    def driver(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def mount_point(self) -> str: ...
    @property
    def driver_options(self) -> Sequence[str]: ...
    @property
    def options(self) -> Sequence[str]: ...


class GuestPullError(OciError):
    """The guest-pull storage is malformed or its fields disagree about the image."""

    def __init__(self, field: str, value: str, expected: str) -> None:
        super().__init__(f"image_guest_pull {field} {value[:200]!r}: expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


@dataclass(frozen=True)
class GuestPullRequest:
    reference: Reference
    digest: Digest
    metadata: Mapping[str, str]


def parse_storage(storage: StorageLike, container_id: str) -> GuestPullRequest:
    """Sans-IO checks of the storage; the reference it names, with its digest."""
    check_id("container_id", container_id)
    if storage.driver != DRIVER:
        raise GuestPullError("driver", storage.driver, DRIVER)
    expected_mount = str(GUEST_RUN / container_id / "rootfs")
    if storage.mount_point != expected_mount:
        raise GuestPullError("mount_point", storage.mount_point, expected_mount)
    if list(storage.options):
        raise GuestPullError("options", ",".join(storage.options), "no options")
    ref = Reference.parse(storage.source)
    digest = ref.require_digest()
    options = [o for o in storage.driver_options if o.startswith(f"{DRIVER}=")]
    if len(options) != 1 or len(storage.driver_options) != 1:
        raise GuestPullError("driver_options", ";".join(storage.driver_options)[:200],
                             f"exactly one {DRIVER}=<JSON>")
    try:
        doc = json.loads(options[0][len(DRIVER) + 1:])
    except ValueError:
        raise GuestPullError("driver_options", options[0], f"{DRIVER}=<JSON object>") from None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise GuestPullError("driver_options", options[0], 'a JSON object {"metadata": {string: string}}')
    for key in CONTAINER_TYPE_KEYS:
        if meta.get(key) == "sandbox":
            raise GuestPullError(key, "sandbox", "a workload container (the sandbox uses the pause bundle)")
    names = [meta[k] for k in IMAGE_NAME_KEYS if k in meta]
    if not names:
        raise GuestPullError("driver_options", "metadata", f"the image name annotation {IMAGE_NAME_KEYS[0]}")
    for name in names:
        annotated = Reference.parse(name).digest
        if annotated != digest:
            raise GuestPullError(IMAGE_NAME_KEYS[0], name, f"the storage source's digest {digest}")
    return GuestPullRequest(ref, digest, meta)


def _credentials(host: str, entry: Mapping[str, Any]) -> Credentials | None:
    if "auth" in entry:
        try:
            user, sep, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise GuestPullError(f"registries.{host}.auth", "<redacted>", "base64 of user:password") from None
        if not sep:
            raise GuestPullError(f"registries.{host}.auth", "<redacted>", "base64 of user:password")
        return Credentials(user, password)
    if "username" in entry or "password" in entry:
        name, secret = entry.get("username"), entry.get("password")
        if not isinstance(name, str) or not isinstance(secret, str):
            raise GuestPullError(f"registries.{host}", "<redacted>", "username and password strings")
        return Credentials(name, secret)
    return None


def parse_registry_config(text: str, origin: str) -> RegistryConfig:
    """``[registries."host[:port]"]`` tables with ``username``/``password`` or ``auth``,
    ``insecure = true`` (plain HTTP allowed) and ``ca`` (PEM trusted instead of the system store)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GuestPullError(origin, "<toml>", f"valid TOML ({exc})") from None
    creds: dict[str, Credentials] = {}
    insecure: set[str] = set()
    cas: dict[str, str] = {}
    registries = doc.get("registries", {})
    if not isinstance(registries, dict):
        raise GuestPullError(origin, "registries", "a table of registry hosts")
    for host, entry in registries.items():
        if not isinstance(entry, dict):
            raise GuestPullError(origin, host, "a table")
        unknown = set(entry) - {"username", "password", "auth", "insecure", "ca"}
        if unknown:
            raise GuestPullError(f"registries.{host}", ",".join(sorted(unknown)),
                                 "keys among username, password, auth, insecure, ca")
        c = _credentials(host, entry)
        if c is not None:
            creds[host] = c
        if entry.get("insecure") is True:
            insecure.add(host)
        if isinstance(entry.get("ca"), str):
            cas[host] = entry["ca"]
    return RegistryConfig(credentials=creds, insecure=frozenset(insecure), ca_certs=cas)


def load_registry_config(measured: Path = MEASURED_CONFIG,
                         unmeasured: Path = UNMEASURED_CONFIG) -> RegistryConfig:
    for path, kind in ((measured, "measured"), (unmeasured, "unmeasured")):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        config = parse_registry_config(text, str(path))
        log.info("event=registry_config source=%s path=%s hosts=%d with_credentials=%d", kind, path,
                 len(set(config.credentials) | set(config.insecure) | set(config.ca_certs)),
                 len(config.credentials))
        return config
    return RegistryConfig()


def _pull(request: GuestPullRequest, cache_dir: Path, dest: Path, config: RegistryConfig,
          limits: Limits | None) -> Path:
    cache = BlobCache(cache_dir)
    image = pull_image(RegistryClient(config), cache, request.reference)
    return unpack_pulled(image, dest, limits=limits)


async def pull_guest_image(storage: StorageLike, container_id: str, *, cache_dir: Path, rootfs_parent: Path,
                           registry_config: RegistryConfig | None = None,
                           limits: Limits | None = None) -> Path:
    """Pull and unpack the storage's image; returns ``rootfs_parent / "rootfs"``.

    ``rootfs_parent`` is the container's bundle directory. Raises OciError subclasses (typed, naming
    the field, blob or layer entry); on any error nothing is left at the rootfs path.
    """
    request = parse_storage(storage, container_id)
    config = registry_config if registry_config is not None else load_registry_config()
    log.info("event=guest_pull_start container_id=%s image=%s", container_id, request.reference)
    dest = rootfs_parent / "rootfs"
    return await asyncio.to_thread(_pull, request, cache_dir, dest, config, limits)
