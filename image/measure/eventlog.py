"""TDX event logs (ACPI CCEL, TCG2 crypto-agile format) and RTMR replay.

RTMR[i] starts at 48 zero bytes and ``extend(d)`` sets it to SHA-384(RTMR || d). The log's first
record uses the legacy TCG 1.2 layout and carries the "Spec ID Event03" header that lists the digest
algorithms; every later record is (u32 MR index, u32 type, u32 digest count, (u16 alg, digest)*count,
u32 size, data). MR index 1..4 are RTMR0..3 (0 is MRTD, which is not extendable); EV_NO_ACTION
records are informational. The log area is padded, so parsing ends at a record whose index or type is
0xFFFFFFFF or whose digest count is 0 (the TCG PC Client crypto-agile log format).

The log comes from the guest or the host and is untrusted: replaying it only tells what the log
claims; it is the comparison of the replayed RTMRs with the quote that gives it meaning.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from image.measure.errors import EventLogError

__all__ = [
    "EV_NO_ACTION",
    "RTMR_COUNT",
    "Event",
    "events_for",
    "parse_ccel",
    "parse_json_events",
    "replay",
    "rtmr_extend",
    "runtime_event_digest",
]

RTMR_COUNT: Final = 4
DIGEST_SIZE: Final = 48
EV_NO_ACTION: Final = 0x3
ALG_SHA384: Final = 0x000C
_END: Final = 0xFFFFFFFF
_SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\0"
MAX_EVENT_SIZE: Final = 16 << 20
MAX_ALGORITHMS: Final = 16


@dataclass(frozen=True, slots=True)
class Event:
    """One measured event: ``rtmr`` is 0-based (log MR index - 1), ``digest`` the SHA-384 digest."""

    rtmr: int
    event_type: int
    digest: bytes
    data: bytes


def rtmr_extend(rtmr: bytes, digest: bytes) -> bytes:
    if len(digest) != DIGEST_SIZE:
        raise EventLogError(f"RTMR extend needs a {DIGEST_SIZE}-byte digest, got {len(digest)}")
    return hashlib.sha384(rtmr + digest).digest()


def replay(events: Iterable[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 after extending every event in order."""
    rtmrs = [bytes(DIGEST_SIZE)] * RTMR_COUNT
    for event in events:
        rtmrs[event.rtmr] = rtmr_extend(rtmrs[event.rtmr], event.digest)
    return rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            left = len(self.data) - self.pos
            raise EventLogError(f"truncated {what}: need {n} bytes, {left} left", self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value


def _parse_spec_id(data: bytes) -> dict[int, int]:
    r = _Reader(data)
    if r.take(16, "Spec ID signature") != _SPEC_ID_SIGNATURE:
        raise EventLogError("first record is not a 'Spec ID Event03' header", 0)
    r.take(8, "Spec ID platform class and versions")
    count = r.u32("Spec ID algorithm count")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise EventLogError(f"Spec ID algorithm count {count} not in 1..{MAX_ALGORITHMS}")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, size = r.u16("algorithm id"), r.u16("digest size")
        if alg in sizes or size == 0 or size > 64:
            raise EventLogError(f"Spec ID algorithm 0x{alg:04x} repeated or with digest size {size}")
        sizes[alg] = size
    if ALG_SHA384 not in sizes or sizes[ALG_SHA384] != DIGEST_SIZE:
        raise EventLogError("Spec ID header lacks SHA-384 (0x000c, 48 bytes)")
    return sizes


def parse_ccel(log: bytes) -> tuple[list[Event], int]:
    """Measured events of a CCEL log area and the number of bytes the log used.

    EV_NO_ACTION records and MR index 0 (MRTD) are parsed but not returned, since they extend nothing.
    """
    r = _Reader(bytes(log))
    index, event_type = r.u32("header MR index"), r.u32("header event type")
    r.take(20, "header SHA-1 field")
    size = r.u32("header event size")
    if index > RTMR_COUNT or event_type != EV_NO_ACTION or size > MAX_EVENT_SIZE:
        raise EventLogError("first record is not an EV_NO_ACTION Spec ID header", 0)
    sizes = _parse_spec_id(r.take(size, "Spec ID event"))
    events: list[Event] = []
    while r.pos + 8 <= len(r.data):
        start = r.pos
        index, event_type = r.u32("MR index"), r.u32("event type")
        if index == _END or event_type == _END:
            r.pos = start
            break
        count = r.u32("digest count")
        if count == 0:
            r.pos = start
            break
        if count > len(sizes):
            raise EventLogError(f"digest count {count} exceeds the {len(sizes)} algorithms", start)
        sha384: bytes | None = None
        for _ in range(count):
            alg = r.u16("algorithm id")
            if alg not in sizes:
                raise EventLogError(f"digest with undeclared algorithm 0x{alg:04x}", r.pos - 2)
            digest = r.take(sizes[alg], "digest")
            if alg == ALG_SHA384:
                sha384 = digest
        size = r.u32("event size")
        if size > MAX_EVENT_SIZE:
            raise EventLogError(f"event size {size} too large", r.pos - 4)
        data = r.take(size, "event data")
        if index > RTMR_COUNT:
            raise EventLogError(f"MR index {index} is not MRTD or RTMR0..3", start)
        if event_type == EV_NO_ACTION or index == 0:
            continue
        if sha384 is None:
            raise EventLogError("measured event without a SHA-384 digest", start)
        events.append(Event(index - 1, event_type, sha384, data))
    return events, r.pos


def runtime_event_digest(event_type: int, name: str, payload: bytes) -> bytes:
    """dstack's RTMR3 runtime-event digest: SHA-384(u32 type || ':' || name || ':' || payload)."""
    return hashlib.sha384(struct.pack("<I", event_type) + b":" + name.encode() + b":" + payload).digest()


def parse_json_events(text: str | bytes) -> list[Event]:
    """A dstack-style JSON event list: ``[{imr, event_type, digest, event, event_payload}]``.

    ``imr`` is 0-based; an empty ``digest`` is recomputed with :func:`runtime_event_digest`.
    """
    try:
        items = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventLogError(f"not JSON: {exc}") from None
    if not isinstance(items, list):
        raise EventLogError("JSON event log must be a list")
    events = []
    for i, item in enumerate(items):
        try:
            imr, event_type = item["imr"], item["event_type"]
            digest_hex, name, payload_hex = item["digest"], item.get("event", ""), item["event_payload"]
            if not (isinstance(imr, int) and 0 <= imr < RTMR_COUNT and isinstance(event_type, int)
                    and 0 <= event_type <= _END and isinstance(name, str)):
                raise TypeError("field types")
            payload = bytes.fromhex(payload_hex)
            digest = (bytes.fromhex(digest_hex) if digest_hex
                      else runtime_event_digest(event_type, name, payload))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventLogError(f"JSON event {i} malformed: {exc}") from None
        if len(digest) != DIGEST_SIZE:
            raise EventLogError(f"JSON event {i} digest is {len(digest)} bytes, expected {DIGEST_SIZE}")
        events.append(Event(imr, event_type, digest, payload))
    return events


def events_for(events: Sequence[Event], rtmr: int) -> list[Event]:
    return [e for e in events if e.rtmr == rtmr]

