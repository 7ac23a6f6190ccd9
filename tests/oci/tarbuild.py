"""Test helper: tar layers built entry by entry (including malicious ones) with tarfile."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field

from backports.zstd import compress as zstd_compress

from oci import Digest


@dataclass
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    size: int | None = None  # override the header's size (lying headers)
    pax: dict[str, str] = field(default_factory=dict)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.pax_headers = dict(e.pax)
            if e.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    return raw


def lying_size_tar(name: str, claimed: int) -> bytes:
    """One regular-file header claiming ``claimed`` bytes, followed by almost nothing."""
    info = tarfile.TarInfo(name)
    info.size = claimed
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    return header + b"\0" * 1024


def huge_pax_tar(claimed: int) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = claimed
    return info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstd_compress(data)
    return data


def diff_id(tar: bytes) -> Digest:
    return Digest.of(tar)
