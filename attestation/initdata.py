"""Initdata: the measured pod configuration (TOML), its digest, and its two transport encodings.

Format (kata-containers ``kata-types/src/initdata.rs``, Contrast ``internal/initdata``)::

    version = "0.1.0"            # the only supported version
    algorithm = "sha256"         # sha256 | sha384 | sha512 ("sha-256" etc. accepted by parse)
    [data]
    "policy.rego" = '''...'''    # file name -> contents (strings only)

The digest is the named hash over the exact raw TOML bytes; the host puts it into HOST_DATA (SNP, 32
bytes) or MRCONFIGID (TDX, 48 bytes), truncated or zero-padded (:func:`platform_digest`).

Transport encodings:

* annotation ``io.katacontainers.config.hypervisor.cc_init_data`` = base64(gzip(raw TOML));
* block-device image: magic (8 bytes, ``initdata``), u64 little-endian length N of the gzip blob, the
  blob, zero padding to a multiple of 512 bytes. Readers must not require the padding.

Everything here is pure (bytes in, values out) except :func:`read_device`, and every failure raises
:class:`InitdataError` naming what was found and what was expected.

Public API: :class:`Initdata`, :class:`InitdataError`, :func:`parse`, :func:`digest`, :func:`encode`,
:func:`encode_annotation`, :func:`decode_annotation`, :func:`encode_device`, :func:`decode_device`,
:func:`read_device`, :func:`platform_digest`, constants ``MAGIC``, ``SUPPORTED_VERSION``,
``ALGORITHMS``, ``ANNOTATION``, ``SNP_HOST_DATA_SIZE``, ``TDX_MRCONFIGID_SIZE``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import re
import struct
import tomllib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

__all__ = [
    "ALGORITHMS",
    "ANNOTATION",
    "MAGIC",
    "MAX_DEVICE_BLOB",
    "MAX_TOML_SIZE",
    "SNP_HOST_DATA_SIZE",
    "SUPPORTED_VERSION",
    "TDX_MRCONFIGID_SIZE",
    "Initdata",
    "InitdataError",
    "decode_annotation",
    "decode_device",
    "decode_stream",
    "digest",
    "encode",
    "encode_annotation",
    "encode_device",
    "parse",
    "platform_digest",
    "read_device",
]

SUPPORTED_VERSION = "0.1.0"
ALGORITHMS: Mapping[str, Callable[[bytes], Any]] = MappingProxyType(
    {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
)
ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
MAGIC = b"initdata"
MAGIC_SIZE = 8
LENGTH_SIZE = 8
SECTOR = 512
# Upstream's limit on the length field (128 GiB): anything larger is rejected before any allocation.
MAX_DEVICE_BLOB = 128 * 1024**3
# Our own bound on what we are willing to hold in memory: the compressed blob and the TOML after gunzip
# (a gzip bomb must not exhaust the guest). kata-agent accepts policies up to 16 MiB.
MAX_TOML_SIZE = 64 * 1024 * 1024
SNP_HOST_DATA_SIZE = 32
TDX_MRCONFIGID_SIZE = 48


class InitdataError(ValueError):
    """Initdata that cannot be used: ``what`` went wrong; message says what was found and expected."""

    def __init__(self, what: str, detail: str = "") -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"{what}: {detail}" if detail else what)


@dataclass(frozen=True)
class Initdata:
    """Parsed initdata. ``data`` maps file names to contents."""

    version: str
    algorithm: str
    data: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Check version and algorithm exactly (no normalisation: ``sha-256`` is rejected here)."""
        if self.version != SUPPORTED_VERSION:
            raise InitdataError("unknown version", f"got {self.version!r}, expected {SUPPORTED_VERSION!r}")
        if self.algorithm not in ALGORITHMS:
            raise InitdataError(
                "unknown algorithm", f"got {self.algorithm!r}, expected one of {sorted(ALGORITHMS)}"
            )

    def hash(self, raw: bytes) -> bytes:
        """Digest of ``raw`` (the TOML bytes this value was parsed from) with this value's algorithm."""
        self.validate()
        return bytes(ALGORITHMS[self.algorithm](raw).digest())


def parse(raw: bytes) -> Initdata:
    """Parse and validate raw TOML bytes; ``sha-256`` style names are normalised to ``sha256``."""
    if len(raw) > MAX_TOML_SIZE:
        raise InitdataError("initdata is too large", f"{len(raw)} bytes, at most {MAX_TOML_SIZE}")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InitdataError("initdata is not UTF-8", str(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InitdataError("initdata is not valid TOML", str(exc)) from exc
    version = doc.get("version", "")
    algorithm = doc.get("algorithm", "")
    if not isinstance(version, str):
        raise InitdataError("unknown version", f"version must be a string, got {type(version).__name__}")
    if not isinstance(algorithm, str):
        raise InitdataError(
            "unknown algorithm", f"algorithm must be a string, got {type(algorithm).__name__}"
        )
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise InitdataError("invalid data", f"[data] must be a table, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise InitdataError("invalid data", f"data[{key!r}] must be a string, got {type(value).__name__}")
    result = Initdata(version=version, algorithm=algorithm.replace("-", "", 1), data=MappingProxyType(data))
    result.validate()
    return result


def digest(raw: bytes) -> bytes:
    """Parse and validate ``raw``, then hash its exact bytes with the algorithm it names."""
    return parse(raw).hash(raw)


def platform_digest(value: bytes, size: int) -> bytes:
    """Fit a digest into a platform field: truncate or zero-pad to ``size`` (32 SNP, 48 TDX)."""
    return value[:size].ljust(size, b"\0")


# -- TOML writer (go-toml v2 layout: version, algorithm, then [data] with sorted keys) --------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _quote(text: str) -> str:
    if "'" not in text and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return f"'{text}'"
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(text: str) -> str:
    return text if _BARE_KEY.fullmatch(text) else _quote(text)


def encode(initdata: Initdata) -> bytes:
    """Serialise to TOML bytes (validates first; does not normalise the algorithm name)."""
    initdata.validate()
    lines = [f"version = {_quote(initdata.version)}", f"algorithm = {_quote(initdata.algorithm)}"]
    if initdata.data:
        lines += ["", "[data]"]
        lines += [f"{_key(k)} = {_quote(initdata.data[k])}" for k in sorted(initdata.data)]
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- transport encodings ------------------------------------------------------------------------------


def _gunzip(blob: bytes) -> bytes:
    try:
        stream = zlib.decompressobj(wbits=31)  # gzip container only
        raw = stream.decompress(blob, MAX_TOML_SIZE + 1)
    except zlib.error as exc:
        raise InitdataError("initdata is not gzip", str(exc)) from exc
    if len(raw) > MAX_TOML_SIZE:
        raise InitdataError("initdata is too large", f"more than {MAX_TOML_SIZE} bytes after gunzip")
    if not stream.eof:
        raise InitdataError("initdata is not gzip", "truncated gzip stream")
    return raw


def encode_annotation(raw: bytes) -> str:
    """base64 (standard, padded) of gzip(raw), as genpolicy writes the pod annotation."""
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def decode_annotation(value: str) -> bytes:
    """Inverse of :func:`encode_annotation`: the raw TOML bytes, unchanged."""
    try:
        blob = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InitdataError("annotation is not base64", str(exc)) from exc
    return _gunzip(blob)


def _check_magic(magic: bytes) -> None:
    if len(magic) != MAGIC_SIZE:
        raise InitdataError("invalid magic", f"magic must be {MAGIC_SIZE} bytes, got {len(magic)}")


def encode_device(raw: bytes, magic: bytes = MAGIC) -> bytes:
    """Block-device image: magic, u64 LE blob length, gzip(raw), zero padding to a 512 multiple."""
    _check_magic(magic)
    blob = gzip.compress(raw, mtime=0)
    image = magic + struct.pack("<Q", len(blob)) + blob
    return image + b"\0" * (-len(image) % SECTOR)


def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = b"".join(chunks)
    if len(data) != size:
        raise InitdataError("EOF", f"fewer than {size} {what} bytes (got {len(data)})")
    return data


def decode_stream(stream: BinaryIO, magic: bytes = MAGIC) -> bytes:
    """Read a device image from ``stream``; return the raw TOML bytes (not yet parsed)."""
    _check_magic(magic)
    found = _read_exact(stream, MAGIC_SIZE, "magic")
    if found != magic:
        raise InitdataError("wrong magic number", f"got {found.hex()}, expected {magic.hex()}")
    (length,) = struct.unpack("<Q", _read_exact(stream, LENGTH_SIZE, "length"))
    if length > MAX_DEVICE_BLOB:
        raise InitdataError("initdata is too large", f"length field {length}, at most {MAX_DEVICE_BLOB}")
    if length > MAX_TOML_SIZE:
        raise InitdataError("initdata is too large", f"length field {length}, accepted {MAX_TOML_SIZE}")
    return _gunzip(_read_exact(stream, length, "initdata"))


def decode_device(image: bytes, magic: bytes = MAGIC) -> bytes:
    """Like :func:`decode_stream` over an in-memory image."""
    return decode_stream(io.BytesIO(image), magic)


def read_device(path: str | Path, magic: bytes = MAGIC) -> bytes:
    """Read the raw TOML bytes from a block device (or image file) at ``path``."""
    with open(path, "rb") as stream:
        return decode_stream(stream, magic)
