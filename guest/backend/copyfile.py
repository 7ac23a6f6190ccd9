"""CopyFile: the runtime copies a pod's bind-mount sources into the guest (shared_fs = none).

kata-agent's semantics: the path must lie under /run/kata-containers/shared/containers/; missing
parents are made with ``dir_mode & 0o777`` and the immediate parent is chowned to uid/gid;
``file_mode``'s type bits choose directory, symlink (target in ``data``) or regular file; a regular
file is written chunk by chunk at ``offset`` into ``<path>.tmp`` and renamed over ``path`` with its
mode and owner once ``file_size`` bytes are there.

Hardening over kata-agent (the host is hostile): the path must be normalised (no ``.``/``..``/empty
components); every directory is walked with ``O_NOFOLLOW`` from the allowed root, so a symlink an
earlier CopyFile planted cannot redirect a later one out of the tree; chunks must arrive in order
(``offset`` = bytes already written) and never beyond ``file_size``; only the three types above;
a regular file never gets set-user-ID or set-group-ID (a Kubernetes volume's modes are 0..0777, and
a setuid-root program the host planted would hand its root to any process of the container).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from guest.protocols import agent_pb2

from .errors import AgentError, InvalidRequestError
from .layout import Layout

__all__ = ["MAX_FILE_SIZE", "SHARED_PREFIX", "copy_file"]

MAX_FILE_SIZE = 1 << 30
SHARED_PREFIX = "/run/kata-containers/shared/containers/"
_NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _components(path: str) -> list[str]:
    """The components of ``path`` below the shared tree (the request carries the guest path)."""
    if not path.startswith(SHARED_PREFIX):
        raise InvalidRequestError("path", path, f"a path under {SHARED_PREFIX}")
    rel = path[len(SHARED_PREFIX):]
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") or len(p.encode()) > _NAME_MAX or "\0" in p for p in parts):
        raise InvalidRequestError("path", path, "a normalised path (no empty, '.' or '..' components)")
    return parts


@contextlib.contextmanager
def _open_parent(layout: Layout, parts: list[str], dir_mode: int, uid: int, gid: int) -> Iterator[int]:
    """An fd of the target's parent directory, creating missing ones; never follows a symlink."""
    layout.shared.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.shared, _DIR_FLAGS)
    try:
        created_last = False
        for name in parts[:-1]:
            try:
                os.mkdir(name, dir_mode, dir_fd=fd)
                created_last = True
            except FileExistsError:
                created_last = False
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidRequestError("path", "/".join(parts), f"{name!r} to be a directory, "
                                              "not a symlink or file") from None
                raise
            os.close(fd)
            fd = nxt
            if created_last:
                os.fchmod(fd, dir_mode)  # not subject to the umask
        if len(parts) > 1:
            os.fchown(fd, uid, gid)
        yield fd
    finally:
        os.close(fd)


def _remove_entry(dir_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise InvalidRequestError("path", name, "not an existing directory")
    os.unlink(name, dir_fd=dir_fd)


def copy_file(layout: Layout, req: agent_pb2.CopyFileRequest) -> None:
    parts = _components(req.path)
    if req.uid < 0 or req.gid < 0:
        raise InvalidRequestError("uid/gid", (req.uid, req.gid), "non-negative ids")
    if not 0 <= req.file_size <= MAX_FILE_SIZE:
        raise InvalidRequestError("file_size", req.file_size, f"0..{MAX_FILE_SIZE}")
    if stat.S_ISREG(req.file_mode) and not 0 <= req.offset <= req.offset + len(req.data) <= req.file_size:
        raise InvalidRequestError("offset", req.offset, f"a chunk inside file_size {req.file_size}")
    kind = stat.S_IFMT(req.file_mode)
    mode = req.file_mode & (0o7777 if kind == stat.S_IFDIR else 0o1777)
    dir_mode = req.dir_mode & 0o777
    name = parts[-1]
    with _open_parent(layout, parts, dir_mode, req.uid, req.gid) as dfd:
        if kind == stat.S_IFDIR:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=dfd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)  # ELOOP if a symlink sits there
            try:
                os.fchmod(fd, mode)
                os.fchown(fd, req.uid, req.gid)
            finally:
                os.close(fd)
        elif kind == stat.S_IFLNK:
            if not req.data or b"\0" in req.data or len(req.data) > 4095:
                raise InvalidRequestError("data", "<symlink target>", "a non-empty target without NUL")
            _remove_entry(dfd, name)
            os.symlink(req.data, name, dir_fd=dfd)
            os.chown(name, req.uid, req.gid, dir_fd=dfd, follow_symlinks=False)
        elif kind == stat.S_IFREG:
            _write_chunk(dfd, name, req, mode)
        else:
            raise InvalidRequestError("file_mode", oct(req.file_mode), "a directory, symlink or regular file")


def _write_chunk(dfd: int, name: str, req: agent_pb2.CopyFileRequest, mode: int) -> None:
    tmp = f"{name}.tmp"
    if len(tmp.encode()) > _NAME_MAX:
        raise InvalidRequestError("path", name, f"a name of at most {_NAME_MAX - 4} bytes")
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if req.offset == 0:
        _remove_entry(dfd, tmp)
        flags |= os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
    except FileNotFoundError:
        raise InvalidRequestError("offset", req.offset, "0 for the first chunk of a file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidRequestError("path", tmp, "not a symlink") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != req.offset:
        os.close(fd)  # a refused chunk leaves the transfer as it was
        if not stat.S_ISREG(st.st_mode):
            raise InvalidRequestError("path", tmp, "a regular file")
        raise InvalidRequestError("offset", req.offset, f"{st.st_size} (chunks in order)")
    try:
        view = memoryview(req.data)
        pos = req.offset
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n
        if pos < req.file_size:
            return
        os.fchmod(fd, mode)
        os.fchown(fd, req.uid, req.gid)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    os.close(fd)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except IsADirectoryError:
        os.unlink(tmp, dir_fd=dfd)
        raise AgentError(f"cannot replace directory {name} with a file") from None
    os.fsync(dfd)
