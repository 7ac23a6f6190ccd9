"""Unpacking image layers into a root filesystem with no path escaping it.

Every entry is resolved component by component from a directory file descriptor of the root with
``O_NOFOLLOW`` (openat-style): a symlink is never followed while unpacking, so an entry "through" a
symlink, ``..``, an absolute name or a hard link to something outside is refused with an
:class:`UnpackError` naming the entry. Layers are applied in order with OCI whiteouts (``.wh.<name>``
removes a lower entry, ``.wh..wh..opq`` empties a directory of lower entries). The whole image is
unpacked into a fresh temporary directory next to the destination and renamed into place only when
every layer succeeded; on any error the temporary tree is removed, so nothing partial is left.

Bounds (attacker-controlled sizes): total file bytes, entry count, path length, and the size of any
tar extension header (a pax header is read into memory by :mod:`tarfile`, so it is checked first).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

# backports.zstd is the stdlib's compression.zstd of Python 3.14, for the image's Python 3.11.
from backports.zstd import ZstdError, ZstdFile

from .digest import Digest, DigestVerifier
from .errors import NoSpaceError, UnpackError

__all__ = ["LayerSource", "Limits", "unpack_image", "unpack_layer"]

log = logging.getLogger("oci.unpack")

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE = "trusted.overlay.opaque"
WHITEOUT_META = ".wh..wh."
CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_EXT_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 16 << 30  # file contents over all layers
    max_entries: int = 1_000_000
    max_header_bytes: int = 1 << 20  # one pax / GNU long-name header
    max_path: int = 4096


@dataclass(frozen=True)
class LayerSource:
    """One layer to apply: a name for errors (its digest), an opener and its compression.

    ``digest`` and ``size`` (the manifest's descriptor): the blob is hashed as it is unpacked and the
    rootfs is only kept if it matches, so a cached blob that changed after it was verified (a disk
    the host can roll back) never becomes a root filesystem."""

    name: str
    compression: str  # "", "gzip" or "zstd"
    path: Path
    digest: Digest | None = None
    size: int = 0


class _VerifiedReader(io.RawIOBase):
    """The blob's bytes, each fed to the digest check as it is read."""

    def __init__(self, raw: BinaryIO, verifier: DigestVerifier) -> None:
        super().__init__()
        self._raw, self.verifier = raw, verifier

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        view[:len(data)] = data
        if data:
            self.verifier.update(data)
        return len(data)

    def finish(self) -> None:
        """Hash what the decompressor left unread (trailing bytes count too); check the digest."""
        while chunk := self._raw.read(CHUNK):
            self.verifier.update(chunk)
        self.verifier.finish()


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.bytes = 0
        self.entries = 0


class _Bounded:
    """A reader that refuses to deliver more decompressed bytes than the budget allows."""

    def __init__(self, raw: Reader, limit: int, layer: str) -> None:
        self._raw = raw
        self._left = limit
        self._layer = layer

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        data = self._raw.read(min(n, self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise UnpackError(self._layer, "", "decompressed layer exceeds the unpack size limit")
        return data


def _tarinfo_class(layer: str, limit: int) -> type[tarfile.TarInfo]:
    class BoundedTarInfo(tarfile.TarInfo):
        # tarfile reads an extension header's whole payload into memory: check its size first.
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _EXT_HEADERS and self.size > limit:
                raise UnpackError(layer, self.name, f"extension header of {self.size} bytes, limit {limit}")
            return super()._proc_member(tar)  # type: ignore[misc,no-any-return]

    return BoundedTarInfo


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def decompressed(raw: BinaryIO, compression: str) -> BinaryIO | gzip.GzipFile | ZstdFile:
    if compression == "":
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zstd":
        return ZstdFile(raw, mode="rb")
    raise ValueError(f"unknown layer compression {compression!r}")


@dataclass
class _State:
    """Per-image state: what the current layer created (for duplicates and opaque directories)."""

    created: set[tuple[str, ...]] = field(default_factory=set)
    dir_times: list[tuple[tuple[str, ...], int]] = field(default_factory=list)


class _Layer:
    def __init__(self, root_fd: int, layer: str, budget: _Budget, *, overlay: bool = False) -> None:
        self.root_fd = root_fd
        self.overlay = overlay  # keep whiteouts as overlayfs markers instead of applying them
        self.layer = layer
        self.budget = budget
        self.state = _State()

    def fail(self, entry: str, problem: str) -> UnpackError:
        return UnpackError(self.layer, entry, problem)

    # -- path resolution --------------------------------------------------------------------------

    def components(self, entry: str, name: str) -> tuple[str, ...]:
        if len(name.encode("utf-8", "surrogateescape")) > self.budget.limits.max_path:
            raise self.fail(entry, f"path longer than {self.budget.limits.max_path} bytes")
        if name.startswith("/"):
            raise self.fail(entry, "absolute path; layer entries must be relative to the root")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.fail(entry, "'..' component would leave the root filesystem")
        return parts

    @contextlib.contextmanager
    def open_dir(self, entry: str, parts: tuple[str, ...], *, create: bool,
                 missing_ok: bool = False) -> Iterator[int]:
        """A directory fd for ``parts``, every component opened with O_NOFOLLOW from the root.

        A missing component is created (``create``), or yields -1 (``missing_ok``), or is an error.
        """
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if missing_ok:
                        os.close(fd)
                        fd = -1
                        break
                    if not create:
                        raise self.fail(entry, f"'{'/'.join(parts[:i + 1])}' does not exist") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        kind = "a symlink" if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False)
                                                           .st_mode) else "not a directory"
                        raise self.fail(entry, f"parent '{'/'.join(parts[:i + 1])}' is {kind}; "
                                        "entries are never written through it") from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def remove(self, dir_fd: int, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    # -- entries ----------------------------------------------------------------------------------

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        entry = member.name
        self.budget.entries += 1
        if self.budget.entries > self.budget.limits.max_entries:
            raise self.fail(entry, f"more than {self.budget.limits.max_entries} entries")
        parts = self.components(entry, member.name)
        base = parts[-1] if parts else ""
        if base.startswith(WHITEOUT):
            self.whiteout(entry, parts)
            return
        if parts in self.state.created:
            raise self.fail(entry, "duplicate entry in one layer")
        if not parts:
            if not member.isdir():
                raise self.fail(entry, "the root entry must be a directory")
            self.metadata_fd(entry, self.root_fd, member)
            self.state.created.add(parts)
            self.state.dir_times.append((parts, int(member.mtime)))
            return
        with self.open_dir(entry, parts[:-1], create=True) as parent:
            self.state.created.add(parts)
            if member.isdir():
                self.directory(entry, parent, base, member, parts)
            elif member.type in _REGULAR:
                self.regular(entry, parent, base, tar, member)
            elif member.issym():
                self.remove(parent, base)
                os.symlink(member.linkname, base, dir_fd=parent)
                self.metadata_path(entry, parent, base, member, symlink=True)
            elif member.islnk():
                self.hardlink(entry, parent, base, member, parts)
            elif member.ischr() or member.isblk() or member.isfifo():
                self.remove(parent, base)
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
                device = os.makedev(member.devmajor, member.devminor) if kind != stat.S_IFIFO else 0
                os.mknod(base, kind | 0o600, device, dir_fd=parent)
                self.metadata_path(entry, parent, base, member, symlink=False)
            else:
                raise self.fail(entry, f"unsupported entry type {member.type!r}")

    def whiteout(self, entry: str, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        if self.overlay:
            self.overlay_marker(entry, parts)
            return
        with self.open_dir(entry, parts[:-1], create=False, missing_ok=True) as parent:
            if parent < 0:
                return  # nothing below to hide
            if base == OPAQUE:
                for child in os.listdir(parent):
                    if (*parts[:-1], child) not in self.state.created:
                        self.remove(parent, child)
                return
            if base.startswith(WHITEOUT_META):
                return  # aufs bookkeeping (.wh..wh.plnk etc.): never materialized
            target = base[len(WHITEOUT):]
            if target in ("", ".", ".."):
                raise self.fail(entry, f"whiteout of {target!r} would leave its directory")
            self.remove(parent, target)

    def overlay_marker(self, entry: str, parts: tuple[str, ...]) -> None:
        """One layer on its own, for an overlay mount of layers: ``.wh.<name>`` becomes the overlayfs
        whiteout (a 0:0 character device named <name>), ``.wh..wh..opq`` the opaque xattr."""
        base = parts[-1]
        if base.startswith(WHITEOUT_META) and base != OPAQUE:
            return
        with self.open_dir(entry, parts[:-1], create=True) as parent:
            if base == OPAQUE:
                os.setxattr(parent, OVERLAY_OPAQUE, b"y")
                return
            target = base[len(WHITEOUT):]
            if target in ("", ".", ".."):
                raise self.fail(entry, f"whiteout of {target!r} would leave its directory")
            if (*parts[:-1], target) in self.state.created:
                raise self.fail(entry, "whiteout of an entry this layer also creates")
            self.remove(parent, target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent)
            self.state.created.add((*parts[:-1], target))

    def directory(self, entry: str, parent: int, base: str, member: tarfile.TarInfo,
                  parts: tuple[str, ...]) -> None:
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self.remove(parent, base)
                os.mkdir(base, 0o700, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            self.metadata_fd(entry, fd, member)
        finally:
            os.close(fd)
        self.state.dir_times.append((parts, int(member.mtime)))

    def regular(self, entry: str, parent: int, base: str, tar: tarfile.TarFile,
                member: tarfile.TarInfo) -> None:
        limits = self.budget.limits
        if member.size > limits.max_bytes - self.budget.bytes:
            raise self.fail(entry, f"file of {member.size} bytes exceeds the unpack limit of "
                            f"{limits.max_bytes} bytes")
        self.remove(parent, base)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            src = tar.extractfile(member)
            written = 0
            if src is not None:
                while chunk := src.read(min(CHUNK, member.size - written)):
                    os.write(fd, chunk)  # regular files on tmpfs/ext4 take whole writes
                    written += len(chunk)
                    if written >= member.size:
                        break
            if written != member.size:
                raise self.fail(entry, f"{written} of {member.size} bytes present (truncated layer)")
            self.budget.bytes += written
            self.metadata_fd(entry, fd, member)
        finally:
            os.close(fd)

    def hardlink(self, entry: str, parent: int, base: str, member: tarfile.TarInfo,
                 parts: tuple[str, ...]) -> None:
        target = self.components(entry, member.linkname)
        if not target:
            raise self.fail(entry, "hard link to the root directory")
        if target == parts:
            raise self.fail(entry, "hard link to itself")
        with self.open_dir(entry, target[:-1], create=False) as tparent:
            try:
                st = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
            except FileNotFoundError:
                raise self.fail(entry, f"hard link target {member.linkname!r} is not unpacked") from None
            if stat.S_ISDIR(st.st_mode):
                raise self.fail(entry, f"hard link target {member.linkname!r} is a directory")
            self.remove(parent, base)
            os.link(target[-1], base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)

    # -- metadata ---------------------------------------------------------------------------------

    def xattrs(self, entry: str, target: int | str, member: tarfile.TarInfo, *, follow: bool) -> None:
        for key, value in sorted(member.pax_headers.items()):
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            raw = value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(target, name, raw, follow_symlinks=follow)
            except OSError as exc:
                optional = not name.startswith("security.capability")
                if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) and optional:
                    log.info("event=xattr_unsupported layer=%s entry=%r xattr=%s", self.layer, entry, name)
                    continue
                raise self.fail(entry, f"cannot set xattr {name}: {exc.strerror}") from None

    def metadata_fd(self, entry: str, fd: int, member: tarfile.TarInfo) -> None:
        # chown first: it clears set-id bits and security.capability, which mode and xattrs restore.
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        self.xattrs(entry, fd, member, follow=True)
        if not member.isdir():
            os.utime(fd, ns=(int(member.mtime) * 10**9, int(member.mtime) * 10**9))

    def metadata_path(self, entry: str, parent: int, base: str, member: tarfile.TarInfo, *,
                      symlink: bool) -> None:
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not symlink:  # the entry was just created by mknod, not a symlink: chmod may resolve it
            os.chmod(base, member.mode & 0o7777, dir_fd=parent)
        self.xattrs(entry, f"/proc/self/fd/{parent}/{base}", member, follow=False)
        os.utime(base, ns=(int(member.mtime) * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        for parts, mtime in reversed(self.state.dir_times):
            with contextlib.suppress(UnpackError, FileNotFoundError), \
                    self.open_dir("", parts, create=False) as fd:
                os.utime(fd, ns=(mtime * 10**9,) * 2)


def unpack_layer(stream: Reader, root_fd: int, layer: str, budget: _Budget, *, overlay: bool = False) -> None:
    """Apply one uncompressed tar stream onto the tree at ``root_fd``."""
    bounded = _Bounded(stream, budget.limits.max_bytes - budget.bytes + (64 << 20), layer)
    state = _Layer(root_fd, layer, budget, overlay=overlay)
    try:
        with tarfile.open(fileobj=bounded, mode="r|",  # type: ignore[call-overload]
                          tarinfo=_tarinfo_class(layer, budget.limits.max_header_bytes)) as tar:
            for member in tar:
                try:
                    state.apply(tar, member)
                except OSError as exc:  # the kernel refused this entry (e.g. mknod, chown, empty link)
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the destination is full, the layer fine
                        raise NoSpaceError("rootfs", f"layer {layer} entry {member.name!r}",
                                           exc.strerror or str(exc)) from None
                    raise UnpackError(layer, member.name, exc.strerror or str(exc)) from None
    except (UnpackError, NoSpaceError):
        raise
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError, ValueError, UnicodeError) as exc:
        raise UnpackError(layer, "", f"unreadable layer: {exc}") from None
    except ZstdError as exc:
        raise UnpackError(layer, "", f"unreadable layer: {exc}") from None
    state.finish()


def unpack_image(layers: Iterable[LayerSource], dest: Path, *, limits: Limits | None = None,
                 overlay: bool = False) -> Path:
    """Unpack ``layers`` (lowest first) into ``dest``, which must not exist; all or nothing.

    ``overlay``: whiteouts stay as overlayfs markers (for one layer meant to be a lower dir of an
    overlay mount) instead of removing what lower layers had."""
    limits = limits or Limits()
    started = time.monotonic()
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "rootfs destination exists", str(dest))
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)  # noqa: S103 (a root filesystem's root is world-readable)
        budget = _Budget(limits)
        root_fd = os.open(tmp, _DIR_FLAGS)
        try:
            for layer in layers:
                with open(layer.path, "rb") as raw:
                    checked = (None if layer.digest is None else
                               _VerifiedReader(raw, DigestVerifier(layer.digest, layer.size)))
                    source = raw if checked is None else cast(BinaryIO, checked)
                    with decompressed(source, layer.compression) as stream:
                        unpack_layer(stream, root_fd, layer.name, budget, overlay=overlay)
                    if checked is not None:
                        checked.finish()
        finally:
            os.close(root_fd)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("event=rootfs_unpacked dest=%s entries=%d bytes=%d seconds=%.3f", dest, budget.entries,
             budget.bytes, time.monotonic() - started)
    return dest


