"""Minimal strict DER reader for the vendor extensions `cryptography` leaves opaque.

Only what AMD's VCEK extensions and Intel's PCK SGX extensions need: definite lengths, minimal
length encoding, INTEGER / OCTET STRING / IA5String / BOOLEAN / ENUMERATED / OID / SEQUENCE.
Every malformed input raises `ParseError`.
"""

from __future__ import annotations

from .errors import ParseError

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_IA5STRING = 0x16
TAG_SEQUENCE = 0x30


def read_tlv(data: bytes, pos: int = 0, *, field: str = "der") -> tuple[int, bytes, int]:
    """Read one TLV at `pos`; return (tag, value, next position)."""
    if pos + 2 > len(data):
        raise ParseError(f"{field}: truncated DER header", field=field, offset=pos)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ParseError(f"{field}: multi-byte DER tags are not supported", field=field, offset=pos)
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise ParseError(f"{field}: unsupported DER length form 0x{first:02x}", field=field, offset=pos)
        if pos + n > len(data):
            raise ParseError(f"{field}: truncated DER length", field=field, offset=pos)
        length = int.from_bytes(data[pos : pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise ParseError(f"{field}: non-minimal DER length", field=field, offset=pos)
        pos += n
    end = pos + length
    if end > len(data):
        raise ParseError(
            f"{field}: DER value runs past the end ({end} > {len(data)})", field=field, offset=pos
        )
    return tag, data[pos:end], end


def read_single(data: bytes, tag: int, *, field: str) -> bytes:
    """The value of exactly one TLV with `tag` covering all of `data`."""
    got, value, end = read_tlv(data, 0, field=field)
    if got != tag:
        raise ParseError(f"{field}: DER tag 0x{got:02x}, expected 0x{tag:02x}", field=field, found=got)
    if end != len(data):
        raise ParseError(
            f"{field}: {len(data) - end} trailing bytes after DER value", field=field, offset=end
        )
    return value


def decode_integer(value: bytes, *, field: str) -> int:
    """A non-negative DER INTEGER body (the SPLs and SVNs are never negative)."""
    if not value:
        raise ParseError(f"{field}: empty INTEGER", field=field)
    if len(value) > 1 and value[0] == 0 and value[1] < 0x80:
        raise ParseError(f"{field}: non-minimal INTEGER encoding", field=field, found=value)
    if value[0] & 0x80:
        raise ParseError(f"{field}: negative INTEGER", field=field, found=value)
    return int.from_bytes(value, "big")


def parse_integer(data: bytes, *, field: str) -> int:
    return decode_integer(read_single(data, TAG_INTEGER, field=field), field=field)


def iter_sequence(value: bytes, *, field: str) -> list[tuple[int, bytes]]:
    """The (tag, value) items of a SEQUENCE body."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(value):
        tag, item, pos = read_tlv(value, pos, field=field)
        items.append((tag, item))
    return items


def decode_oid(value: bytes, *, field: str) -> str:
    if not value:
        raise ParseError(f"{field}: empty OID", field=field)
    arcs: list[int] = []
    acc = 0
    started = False
    for b in value:
        if not started and b == 0x80:
            raise ParseError(f"{field}: non-minimal OID arc", field=field)
        started = True
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
            started = False
    if started:
        raise ParseError(f"{field}: truncated OID", field=field)
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def encode_integer(n: int) -> bytes:
    body = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
    return encode_tlv(TAG_INTEGER, body)


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for i, arc in enumerate([arcs[0] * 40 + arcs[1], *arcs[2:]]):
        del i
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return encode_tlv(TAG_OID, bytes(out))
