"""An in-memory description of a file tree, turned into a directory, a cpio archive or a digest.

Both the initramfs and the root filesystem are described as a ``FileTree`` first. The tree's
digest covers every path, mode, link target and file content, so it is the cache key of the
image: equal digests mean byte-identical images (the builder is deterministic).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import cpio
from .errors import BuildError

__all__ = ["FileTree", "Node"]


@dataclass(frozen=True, slots=True)
class Node:
    kind: str  # "dir", "file" or "link"
    mode: int = 0o755
    source: Path | None = None  # host file whose content is copied
    data: bytes | None = None  # literal content
    target: str = ""  # symlink target

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()


def _norm(path: str) -> str:
    p = PurePosixPath("/" + path.lstrip("/"))
    parts = [x for x in p.parts[1:] if x not in ("", ".")]
    if ".." in parts or not parts:
        raise BuildError(f"bad path in image tree: {path!r}")
    return "/".join(parts)


class FileTree:
    """Paths (relative, POSIX) mapped to directories, files and symlinks."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def _parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            node = self.nodes.get(d)
            if node is None:
                self.nodes[d] = Node("dir", 0o755)
            elif node.kind != "dir":
                raise BuildError(f"{d} is a {node.kind} but {rel} needs it to be a directory")

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        rel = _norm(path)
        self._parents(rel)
        self.nodes[rel] = Node("dir", mode)

    def add_file(self, path: str, *, source: Path | None = None, data: bytes | None = None,
                 mode: int | None = None) -> None:
        rel = _norm(path)
        if (source is None) == (data is None):
            raise BuildError(f"{rel}: give exactly one of source or data")
        if mode is None:
            mode = 0o755 if source is not None and os.stat(source).st_mode & 0o111 else 0o644
        self._parents(rel)
        self.nodes[rel] = Node("file", mode, source=source, data=data)

    def add_symlink(self, path: str, target: str) -> None:
        rel = _norm(path)
        self._parents(rel)
        self.nodes[rel] = Node("link", 0o777, target=target)

    def add_host_file(self, host_path: Path, path: str | None = None) -> None:
        """Copy a host file (following symlinks for the content) to ``path`` (default: same path)."""
        real = host_path.resolve()
        if not real.is_file():
            raise BuildError(f"missing host file {host_path}")
        self.add_file(path or str(host_path), source=real)

    def __contains__(self, path: str) -> bool:
        return _norm(path) in self.nodes

    def file_bytes(self) -> int:
        return sum(os.stat(n.source).st_size if n.source else len(n.data or b"")
                   for n in self.nodes.values() if n.kind == "file")

    def digest(self) -> str:
        """sha256 over the sorted (path, kind, mode, content hash or target) records."""
        h = hashlib.sha256()
        for rel in sorted(self.nodes):
            n = self.nodes[rel]
            detail = hashlib.sha256(n.content()).hexdigest() if n.kind == "file" else n.target
            h.update(f"{rel}\0{n.kind}\0{n.mode:o}\0{detail}\n".encode())
        return h.hexdigest()

    def to_cpio(self) -> bytes:
        entries = []
        for rel in sorted(self.nodes):
            n = self.nodes[rel]
            if n.kind == "dir":
                entries.append(cpio.directory(rel, n.mode))
            elif n.kind == "link":
                entries.append(cpio.symlink(rel, n.target))
            else:
                entries.append(cpio.regular(rel, n.content(), n.mode))
        return cpio.write_newc(entries)

    def materialize(self, root: Path) -> None:
        """Write the tree below ``root`` (which must not exist yet) with exact modes."""
        root.mkdir(parents=True)
        for rel in sorted(self.nodes):
            n = self.nodes[rel]
            dest = root / rel
            if n.kind == "dir":
                dest.mkdir()
            elif n.kind == "link":
                os.symlink(n.target, dest)
            elif n.source is not None:
                shutil.copyfile(n.source, dest)
            else:
                dest.write_bytes(n.data or b"")
        # Modes last, so read-only directories can still be filled above.
        for rel in sorted(self.nodes, reverse=True):
            n = self.nodes[rel]
            if n.kind != "link":
                os.chmod(root / rel, stat.S_IMODE(n.mode))
