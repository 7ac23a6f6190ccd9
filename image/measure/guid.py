"""EFI GUIDs in their on-disk (mixed-endian) form, without importing :mod:`uuid`.

``uuid`` pulls in ``platform`` at import, which is a measurable share of a CLI run; the firmware
formats here only need the 16-byte little-endian-fields encoding and a readable form for errors.
"""

from __future__ import annotations

__all__ = ["guid_le", "guid_str"]


def guid_le(text: str) -> bytes:
    """``"00f771de-1a7e-4fcb-890e-68c77e2fb44e"`` -> the 16 bytes EFI stores (first 3 fields LE)."""
    parts = text.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        raise ValueError(f"not a GUID: {text!r}")
    raw = bytes.fromhex("".join(parts))
    return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]


def guid_str(data: bytes) -> str:
    """Inverse of :func:`guid_le`."""
    if len(data) != 16:
        raise ValueError(f"a GUID is 16 bytes, got {len(data)}")
    raw = data[3::-1] + data[5:3:-1] + data[7:5:-1] + data[8:]
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
