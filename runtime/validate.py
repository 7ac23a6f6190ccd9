"""Checks for every value containerd hands the shim (ids, bundle, FIFO paths, annotations).

The shim runs on the host as root. Its inputs come from containerd, which takes them from its
clients (ctr, the CRI, anyone with access to its socket), so an id or path must never make the
shim read, create or remove a file outside the directories containerd gave it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from .errors import InvalidInputError

__all__ = [
    "MAX_ANNOTATION_BYTES",
    "MAX_SPEC_BYTES",
    "check_annotations",
    "check_bundle",
    "check_exec_id",
    "check_fifo",
    "check_id",
    "check_namespace",
    "read_spec",
]

# containerd's own identifier rule: alphanumerics, '.', '_', '-', starting with an alphanumeric,
# at most 76 characters.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,75}")
MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_ANNOTATION_BYTES = 1024 * 1024


def check_id(value: str, what: str = "id") -> str:
    if not _ID.fullmatch(value) or ".." in value:
        raise InvalidInputError(what, value, "1-76 of [A-Za-z0-9._-] starting with an alphanumeric, no '..'")
    return value


def check_exec_id(value: str) -> str:
    return check_id(value, "exec id")


def check_namespace(value: str) -> str:
    return check_id(value, "namespace")


def _no_symlink_components(path: Path, what: str) -> None:
    current = Path("/")
    for part in path.parts[1:]:
        current = current / part
        try:
            st = os.lstat(current)
        except OSError as e:
            raise InvalidInputError(
                what, str(path), f"an existing path ({e.strerror} at {current})"
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise InvalidInputError(what, str(path), f"a path without symbolic links ({current} is one)")


def check_bundle(bundle: str, task_id: str) -> Path:
    """The bundle directory: absolute, normalised, no symlink anywhere, named after the task id."""
    if not bundle.startswith("/") or "\0" in bundle or os.path.normpath(bundle) != bundle:
        raise InvalidInputError("bundle", bundle, "an absolute normalised path")
    path = Path(bundle)
    if path.name != task_id:
        raise InvalidInputError("bundle", bundle, f"a directory named after the task id {task_id!r}")
    _no_symlink_components(path, "bundle")
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise InvalidInputError("bundle", bundle, "a directory")
    return path


def read_spec(bundle: Path) -> bytes:
    """``config.json`` of the bundle: a regular file (not a link), at most MAX_SPEC_BYTES."""
    try:
        fd = os.open(bundle / "config.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidInputError(
            "bundle config.json", str(bundle / "config.json"), f"a regular file ({e.strerror})"
        ) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidInputError("bundle config.json", str(bundle / "config.json"), "a regular file")
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise InvalidInputError("bundle config.json size", len(data), f"at most {MAX_SPEC_BYTES} bytes")
    return data


def check_fifo(path: str, what: str) -> Path | None:
    """A stdio path: empty (none) or an absolute normalised path naming an existing FIFO.

    containerd creates the FIFOs before it calls Create/Exec; anything else (a regular file, a
    device, a link) is refused, so the shim never writes a container's output into a host file.
    """
    if path == "":
        return None
    if path.startswith("fifo://"):
        path = path.removeprefix("fifo://")
    if not path.startswith("/") or "\0" in path or os.path.normpath(path) != path:
        raise InvalidInputError(what, path, "an absolute normalised FIFO path")
    try:
        st = os.lstat(path)
    except OSError as e:
        raise InvalidInputError(what, path, f"an existing FIFO ({e.strerror})") from None
    if not stat.S_ISFIFO(st.st_mode):
        raise InvalidInputError(what, path, "a FIFO (named pipe)")
    return Path(path)


def check_annotations(annotations: object) -> dict[str, str]:
    if annotations is None:
        return {}
    if not isinstance(annotations, Mapping):
        raise InvalidInputError("annotations", type(annotations).__name__, "a JSON object of strings")
    out: dict[str, str] = {}
    total = 0
    for k, v in annotations.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidInputError("annotation", k, "string keys and values")
        if "\0" in k or "\0" in v:
            raise InvalidInputError("annotation", k, "no NUL characters")
        total += len(k) + len(v)
        out[k] = v
    if total > MAX_ANNOTATION_BYTES:
        raise InvalidInputError("annotations size", total, f"at most {MAX_ANNOTATION_BYTES} bytes")
    return out
