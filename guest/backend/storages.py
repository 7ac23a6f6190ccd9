"""Storages of CreateSandbox / CreateContainer, by driver, each undone on release.

- ``ephemeral``: a tmpfs, options from a fixed list: the container's own (below its bundle), or a
  Kubernetes memory-medium emptyDir at ``/run/kata-containers/sandbox/ephemeral/<volume>`` as Kata's
  runtime sends it with every container mounting it: mounted once per sandbox, shared by the pod's
  containers and kept until the sandbox ends (an emptyDir lives as long as its pod: what an init
  container wrote, e.g. the Initializer's certificates, is there for the containers after it);
- ``image_guest_pull``: for the sandbox container, the built-in pause bundle (the pause binary from
  the measured image copied into the bundle's rootfs); for workloads, the in-guest pull
  (guest/backend/guestpull.py) — until that module is present the driver fails closed;
- ``erofs.multi-layer``: each storage one dm-verity mapped erofs layer (guest/storage, parameters
  pinned by the policy), mounted once per sandbox and shared (refcounted) by the containers using
  it; the container's rootfs an overlay of its layers with its own tmpfs upper dir;
- ``blk`` (a PCI path: the disk Kata's runtime hotplugs into a root port for each emptyDir) or
  ``mmioblk`` (a device path): genpolicy's block-encrypted emptyDir, ``driver_options``
  ``encryption_key=ephemeral`` (required: a block storage is never mounted in plaintext) and
  ``create_filesystem``: a LUKS2 volume with a key born in the VM (guest/storage/encrypted.py) at
  ``/run/kata-containers/sandbox/storage/<b64url(source)>``, on a disk nothing in the guest holds or
  mounts, opened once per sandbox, shared by the containers naming it and closed when the sandbox
  ends; its root is 0777 as kubelet makes an emptyDir (setgid to the pod's fsGroup when given).

Every mount point must be the container's own (``/run/kata-containers/<cid>/...``) or the sandbox
shm; a layer's source string is resolved to a block device by guest/storage (the dm table names
the kernel's device, never the request's string).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guest.protocols import agent_pb2
from guest.storage import (
    PolicyDeniedError,
    StorageError,
    VerityMount,
    check_pinned,
    check_unused,
    make_pod_shared,
    mount_layer_storage,
    params_from_options,
    pinned_for,
    resolve_layer_source,
    resolve_source,
)
from guest.storage.crypt import CryptVolume
from guest.storage.encrypted import (
    IMAGE_STORE_ANNOTATION,
    IMAGE_STORE_MOUNT,
    image_store_storage,
    open_ephemeral_volume,
    open_image_store,
    parse_block_driver_options,
)
from guest.storage.mount import MS_NODEV, MS_NOSUID, MS_RDONLY, mount
from guest.storage.pci import block_device_for_pci_path
from guest.storage.verity import device_name
from oci import NoSpaceError

from .errors import AgentError, InvalidRequestError, StorageFailedError
from .layout import Layout

__all__ = ["BLOCK_VOLUME_DRIVERS", "IMAGE_STORE_MOUNT", "SANDBOX_CONTAINER_TYPE", "MountedStorage",
           "Storages", "check_image_store_request", "container_type"]

log = logging.getLogger("guest.backend")

MS_NOEXEC = 8
MS_BIND = 4096
MS_REMOUNT = 32
MNT_DETACH = 2
SANDBOX_CONTAINER_TYPE = "sandbox"
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
_TMPFS_FLAGS = {"noexec": MS_NOEXEC, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "ro": MS_RDONLY}
_TMPFS_DATA = re.compile(r"(mode=[0-7]{3,4}|size=[0-9]{1,19}[kmg]?|nr_inodes=[0-9]{1,19})")
PAUSE_BINARY = Path("/usr/libexec/confidential-guest/pause")
PAUSE_ARGS = ["/pause", "-P"]  # catatonit's pause mode: no program, reaps, exits on SIGINT/SIGTERM


def container_type(storages: Sequence[agent_pb2.Storage], annotations: Mapping[str, str]) -> str:
    """kata: the container type comes from the guest-pull storage's metadata (else the spec's)."""
    for s in storages:
        if s.driver != "image_guest_pull":
            continue
        for opt in s.driver_options:
            key, sep, value = opt.partition("=")
            if key != "image_guest_pull" or not sep:
                continue
            try:
                meta = json.loads(value).get("metadata", {})
            except (ValueError, AttributeError):
                raise InvalidRequestError("storage.driver_options", opt[:80],
                                          "image_guest_pull=<JSON>") from None
            for k in CONTAINER_TYPE_KEYS:
                if isinstance(meta, dict) and isinstance(meta.get(k), str):
                    return str(meta[k])
    for k in CONTAINER_TYPE_KEYS:
        if k in annotations:
            return annotations[k]
    return ""


def check_image_store_request(s: agent_pb2.Storage) -> None:
    """The image store storage must be exactly the encrypted shape the policy pins (defence in depth:
    the guest never mounts a plaintext image store whatever the policy says)."""
    want = image_store_storage()
    got = {"driver": s.driver, "driver_options": list(s.driver_options), "source": s.source,
           "fstype": s.fstype, "mount_point": s.mount_point}
    if got != want or list(s.options) or s.HasField("fs_group") or s.shared:
        raise InvalidRequestError("image store storage", got, f"exactly {want}")


@dataclass
class MountedStorage:
    driver: str
    mount_point: Path
    undo: list[Callable[[], None]] = field(default_factory=list)

    def release(self) -> None:
        errors = []
        for step in reversed(self.undo):
            try:
                step()
            except (OSError, StorageError) as e:
                errors.append(str(e))
        self.undo.clear()
        if errors:
            raise AgentError(f"releasing {self.driver} at {self.mount_point}: {'; '.join(errors)}")


def _inside(field_name: str, path: str, base: Path) -> Path:
    p = Path(path)
    if not path.startswith("/") or any(c in ("..", ".") for c in path.split("/")) or "//" in path:
        raise InvalidRequestError(field_name, path, "an absolute normalised path")
    if not (p == base or p.is_relative_to(base)):
        raise InvalidRequestError(field_name, path, f"a path under {base}")
    return p


def _program_mount(tree: Path, rootfs: Path) -> Callable[[], None]:
    """``tree`` bound at ``rootfs`` as a mount of its own without nosuid/nodev: the image's
    set-user-ID programs (ping, su, sudo) work as under runc on a node, although the tmpfs /run and
    the image store that hold the tree are nosuid,nodev. (The image's content is verified.) The
    undo step."""
    mount(str(tree), rootfs, "", MS_BIND)
    try:
        mount("none", rootfs, "", MS_BIND | MS_REMOUNT)
    except StorageError:
        _lazy_umount(rootfs)()
        raise
    return _lazy_umount(rootfs)


def _lazy_umount(path: Path) -> Callable[[], None]:
    def undo() -> None:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.umount2(str(path).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (22,):  # EINVAL: not mounted any more
                raise OSError(err, f"umount {path}: {os.strerror(err)}")
    return undo


@dataclass
class _SharedLayer:
    mount: VerityMount
    path: Path
    refs: int = 0


@dataclass
class _SharedTmpfs:
    path: Path
    undo: Callable[[], None]


EPHEMERAL_DIR = Path("/run/kata-containers/sandbox/ephemeral")
_VOLUME_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a Kubernetes volume name (DNS label)


@dataclass
class _SharedVolume:
    volume: CryptVolume
    path: Path
    group: int | None


BLOCK_VOLUME_DIR = Path("/run/kata-containers/sandbox/storage")
BLOCK_VOLUME_DRIVERS = ("blk", "mmioblk")


def _empty_dir_root(root: Path, group: int | None) -> None:
    """The fresh filesystem's root as kubelet makes an emptyDir: writable by every user (0777); with
    the pod's fsGroup, owned by that group and setgid (what kubelet's volume ownership does)."""
    if group is not None:
        os.chown(root, 0, group)
        os.chmod(root, 0o2777)  # noqa: S103 - an emptyDir is writable by every user of the pod
    else:
        os.chmod(root, 0o777)  # noqa: S103 - as kubelet makes an emptyDir


class Storages:
    def __init__(self, layout: Layout, *, pinned_layers: Callable[[], Sequence[Mapping[str, str]]],
                 pause_binary: Path = PAUSE_BINARY) -> None:
        self.layout = layout
        self.pinned_layers = pinned_layers
        self.pause_binary = pause_binary
        self._layers: dict[str, _SharedLayer] = {}
        self._volumes: dict[str, _SharedVolume] = {}
        self._volume_lock = asyncio.Lock()
        self.image_store: Path | None = None  # pulled images go here when the sandbox has one
        self._tmpfs: dict[str, _SharedTmpfs] = {}

    def _guest_path(self, path: Path) -> Path:
        """A guest path of a request mapped below the layout root (identity in the VM)."""
        return self.layout.root / path.relative_to("/")

    def mount_tmpfs(self, s: agent_pb2.Storage, base: Path) -> MountedStorage:
        target = self._guest_path(_inside("storage.mount_point", s.mount_point, base))
        flags, data = 0, []
        for opt in s.options:
            if opt in _TMPFS_FLAGS:
                flags |= _TMPFS_FLAGS[opt]
            elif _TMPFS_DATA.fullmatch(opt):
                data.append(opt)
            else:
                raise InvalidRequestError("storage.options", opt,
                                          f"one of {sorted(_TMPFS_FLAGS)}, mode=, size=")
        if s.fstype not in ("tmpfs", ""):
            raise InvalidRequestError("storage.fstype", s.fstype, "tmpfs")
        target.mkdir(parents=True, exist_ok=True)
        mount("tmpfs", target, "tmpfs", flags | MS_NOSUID | MS_NODEV, ",".join(data))
        return MountedStorage("ephemeral", target, [_lazy_umount(target)])

    def release_pod_volumes(self) -> None:
        """The sandbox ends: its memory emptyDirs are unmounted, its block-encrypted ones closed (their
        keys die with them)."""
        errors = []
        for key, volume in list(self._volumes.items()):
            del self._volumes[key]
            try:
                volume.volume.close()
            except (OSError, StorageError) as e:
                errors.append(str(e))
        for name, shared in list(self._tmpfs.items()):
            del self._tmpfs[name]
            try:
                shared.undo()
            except OSError as e:
                errors.append(str(e))
            with contextlib.suppress(OSError):
                shared.path.rmdir()
        if errors:
            raise AgentError(f"releasing the pod's emptyDirs: {'; '.join(errors)}")

    def _sandbox_tmpfs(self, s: agent_pb2.Storage) -> MountedStorage:
        """A memory emptyDir: one tmpfs per volume name and sandbox, however many containers name it;
        a container's removal leaves it (release_pod_volumes ends it with the sandbox)."""
        name = s.mount_point.removeprefix(str(EPHEMERAL_DIR) + "/")
        if not _VOLUME_NAME.fullmatch(name):
            raise InvalidRequestError("storage.mount_point", s.mount_point,
                                      f"{EPHEMERAL_DIR}/<volume name (a DNS label)>")
        if s.source != "tmpfs":
            raise InvalidRequestError("storage.source", s.source, "tmpfs")
        shared = self._tmpfs.get(name)
        if shared is None:
            mounted = self.mount_tmpfs(s, EPHEMERAL_DIR)
            try:
                make_pod_shared(mounted.mount_point)  # secure-pv: the sidecar's mount reaches the app
            except StorageError:
                with contextlib.suppress(AgentError):
                    mounted.release()
                raise
            shared = self._tmpfs[name] = _SharedTmpfs(mounted.mount_point, mounted.undo[0])
        return MountedStorage("ephemeral", shared.path, [])

    async def mount_container(self, container_id: str, storages: Sequence[agent_pb2.Storage],
                              sandbox_container: bool) -> tuple[list[MountedStorage], Path | None]:
        """Mount a container's storages; (what to release, the rootfs if a storage provided it)."""
        bundle = self.layout.bundle(container_id)
        guest_bundle = Path("/run/kata-containers") / container_id
        guest_rootfs = guest_bundle / "rootfs"
        mounted: list[MountedStorage] = []
        rootfs: Path | None = None
        layers: list[Path] = []
        try:
            for s in storages:
                if s.driver == "ephemeral" and s.mount_point.startswith(str(EPHEMERAL_DIR) + "/"):
                    mounted.append(self._sandbox_tmpfs(s))
                elif s.driver == "ephemeral":
                    mounted.append(self.mount_tmpfs(s, guest_bundle))
                elif s.driver == "image_guest_pull":
                    if Path(s.mount_point) != guest_rootfs:
                        raise InvalidRequestError("storage.mount_point", s.mount_point, str(guest_rootfs))
                    if rootfs is not None:
                        raise InvalidRequestError("storages", s.driver, "one rootfs storage")
                    if sandbox_container:
                        rootfs = self._pause_rootfs(bundle)
                    else:
                        rootfs = await self._guest_pull(s, container_id, bundle, mounted)
                elif s.driver == "erofs.multi-layer":
                    layer_dir, release = self._shared_layer(s)
                    mounted.append(MountedStorage(s.driver, layer_dir, [release]))
                    layers.append(layer_dir)
                elif s.driver in ("mmioblk", "blk", "scsi"):
                    # Formatting wipes the whole device (seconds to minutes): off the event loop,
                    # one at a time so two containers naming one emptyDir share one volume.
                    async with self._volume_lock:
                        path, release = await asyncio.to_thread(self._encrypted_block, s)
                    mounted.append(MountedStorage(s.driver, path, [release]))
                else:
                    raise InvalidRequestError("storage.driver", s.driver,
                                              "ephemeral, image_guest_pull, erofs.multi-layer or mmioblk")
            if layers:
                if rootfs is not None:
                    raise InvalidRequestError("storages", "erofs.multi-layer", "one rootfs source")
                rootfs = self._overlay(bundle, layers, mounted)
        except BaseException:
            for m in reversed(mounted):
                with contextlib.suppress(AgentError):
                    m.release()
            raise
        return mounted, rootfs

    def _shared_layer(self, s: agent_pb2.Storage) -> tuple[Path, Callable[[], None]]:
        """A verity layer mounted once per sandbox and shared by the containers using it (kata
        refcounts storages the same way); every request is checked against the policy's pins."""
        try:
            requested = params_from_options(list(s.options))
            if requested is None:
                raise PolicyDeniedError({"X-kata.dmverity-enabled": ("absent", "true")})
            pinned = pinned_for(requested, self.pinned_layers())
            check_pinned(requested, pinned)
            name = device_name(resolve_layer_source(s.source), pinned)
            shared = self._layers.get(name)
            if shared is None:
                layer_dir = self.layout.sandbox / "layers" / name
                vm = mount_layer_storage(s.driver, s.source, list(s.options), layer_dir, self.pinned_layers())
                shared = self._layers[name] = _SharedLayer(vm, layer_dir)
        except StorageError as e:
            raise StorageFailedError(s.driver, s.mount_point, str(e)) from e
        shared.refs += 1

        def release() -> None:
            shared.refs -= 1
            if shared.refs == 0:
                del self._layers[name]
                shared.mount.close()
                with contextlib.suppress(OSError):
                    shared.path.rmdir()

        return shared.path, release

    def _encrypted_block(self, s: agent_pb2.Storage) -> tuple[Path, Callable[[], None]]:
        """A block-encrypted emptyDir: the disk at the storage's PCI path (``blk``, as Kata's runtime
        hotplugs it) or device path (``mmioblk``) formatted with a key born here on first use in this
        sandbox, then shared by every container naming it until the sandbox ends (an emptyDir lives as
        long as its pod, so a container's removal leaves it, as for memory emptyDirs)."""
        if s.driver not in BLOCK_VOLUME_DRIVERS:
            raise InvalidRequestError("storage.driver", s.driver,
                                      "blk (a PCI path) or mmioblk (SCSI addresses are not resolved)")
        expected = BLOCK_VOLUME_DIR / base64.urlsafe_b64encode(s.source.encode()).decode()
        if s.mount_point != str(expected):
            raise InvalidRequestError("storage.mount_point", s.mount_point, str(expected))
        if s.fstype != "ext4":
            raise InvalidRequestError("storage.fstype", s.fstype, "ext4")
        if list(s.options):
            raise InvalidRequestError("storage.options", list(s.options), "no mount options")
        group = None
        if s.HasField("fs_group"):
            if not 0 < s.fs_group.group_id < 1 << 31:
                raise InvalidRequestError("storage.fs_group.group_id", s.fs_group.group_id,
                                          "a group id from 1 to 2^31-1")
            group = s.fs_group.group_id
        try:
            opts = parse_block_driver_options(list(s.driver_options))
            if not opts.encrypted or not opts.create_filesystem:
                raise InvalidRequestError("storage.driver_options", list(s.driver_options),
                                          "encryption_key=ephemeral and create_filesystem")
            shared = self._volumes.get(s.mount_point)
            if shared is None:
                device = (block_device_for_pci_path(s.source, timeout=60) if s.driver == "blk"
                          else resolve_source(s.source))
                check_unused(device)
                target = self._guest_path(expected)
                vol = open_ephemeral_volume(device, target)
                try:
                    _empty_dir_root(target, group)
                    make_pod_shared(target)  # a Bidirectional mount under it reaches the pod's others
                except (OSError, StorageError) as e:
                    vol.close()
                    raise StorageFailedError(s.driver, s.mount_point,
                                             f"preparing the volume's root: {e}") from e
                shared = self._volumes[s.mount_point] = _SharedVolume(vol, target, group)
            elif shared.group != group:
                raise InvalidRequestError("storage.fs_group", group,
                                          f"{shared.group} (as the volume was opened)")
        except StorageError as e:
            raise StorageFailedError(s.driver, s.mount_point, str(e)) from e
        return shared.path, lambda: None

    async def open_image_store(self, s: agent_pb2.Storage) -> MountedStorage:
        """The secure image store: the hotplugged disk at the storage's PCI path formatted with a key
        born here (guest/storage/encrypted.py), mounted where the puller caches and unpacks."""
        check_image_store_request(s)
        target = self._guest_path(Path(IMAGE_STORE_MOUNT))

        def go() -> CryptVolume:
            device = block_device_for_pci_path(s.source, timeout=60)
            check_unused(device)
            return open_image_store(device, target)

        try:
            async with self._volume_lock:
                vol = await asyncio.to_thread(go)
        except StorageError as e:
            raise StorageFailedError(s.driver, s.mount_point, str(e)) from e
        self.image_store = target

        def close() -> None:
            self.image_store = None
            vol.close()

        log.info("event=image_store_opened mount_point=%s formatted=%s", IMAGE_STORE_MOUNT, vol.formatted)
        return MountedStorage("image-store", target, [close])

    def _pause_rootfs(self, bundle: Path) -> Path:
        rootfs = bundle / "rootfs"
        rootfs.mkdir(parents=True, exist_ok=False)
        for d in ("proc", "dev", "sys", "etc"):
            (rootfs / d).mkdir()
        shutil.copyfile(self.pause_binary, rootfs / "pause")
        (rootfs / "pause").chmod(0o555)
        return rootfs

    def _overlay(self, bundle: Path, layers: list[Path], mounted: list[MountedStorage]) -> Path:
        rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
        for d in (rootfs, upper, work):
            d.mkdir(parents=True, exist_ok=True)
        lower = ":".join(str(p) for p in reversed(layers))  # the first storage is the bottom layer
        try:
            mount("overlay", rootfs, "overlay", MS_NODEV,
                  f"lowerdir={lower},upperdir={upper},workdir={work}")
        except StorageError as e:
            raise StorageFailedError("erofs.multi-layer", str(rootfs), f"overlay: {e}") from e
        mounted.append(MountedStorage("overlay", rootfs, [_lazy_umount(rootfs)]))
        return rootfs

    async def _guest_pull(self, s: agent_pb2.Storage, container_id: str, bundle: Path,
                          mounted: list[MountedStorage]) -> Path:
        try:
            module: Any = importlib.import_module("guest.backend.guestpull")
        except ImportError:
            raise StorageFailedError(s.driver, s.mount_point,
                                     "in-guest image pull is not available in this agent build") from None
        bundle.mkdir(parents=True, exist_ok=True)
        cache, parent, where = self.layout.image_cache, bundle, "memory"
        store_dir: Path | None = None
        if self.image_store is not None:
            # layers and the unpacked rootfs on the encrypted disk instead of the VM's RAM
            where = "image-store"
            cache, parent = self.image_store / "cache", self.image_store / "rootfs" / container_id
            store_dir = parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # e.g. EIO: the host altered the store's disk
                raise StorageFailedError(s.driver, s.mount_point, f"image store: {e}") from e
        log.info("event=guest_pull_destination container_id=%s store=%s cache=%s rootfs=%s", container_id,
                 where, cache, parent / "rootfs")
        try:
            pulled = Path(await module.pull_guest_image(s, container_id, cache_dir=cache,
                                                        rootfs_parent=parent))
        except AgentError:
            _remove_tree(store_dir)
            raise
        except NoSpaceError as e:
            _remove_tree(store_dir)
            room = (f"the image store is full: the image needs a larger {IMAGE_STORE_ANNOTATION}"
                    if store_dir is not None else
                    "the VM's memory is full: the pod needs more memory or an image store "
                    f"({IMAGE_STORE_ANNOTATION})")
            raise StorageFailedError(s.driver, s.mount_point, f"{room}; {e}") from e
        except Exception as e:  # the puller's typed errors: report them, run nothing
            _remove_tree(store_dir)
            raise StorageFailedError(s.driver, s.mount_point, f"{type(e).__name__}: {e}") from e
        rootfs = bundle / "rootfs"
        rootfs.mkdir(exist_ok=True)
        # the unpacked tree is the container's own: it leaves the store with the container
        undo = [lambda: _remove_tree(store_dir)] if pulled != rootfs else []
        undo.append(_program_mount(pulled, rootfs))
        mounted.append(MountedStorage("image_guest_pull", rootfs, undo))
        return rootfs


def _remove_tree(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
