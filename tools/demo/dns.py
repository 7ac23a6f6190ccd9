"""The demo's cluster DNS: Services' names to their pods' addresses, as a cluster's DNS does.

``python -m tools.demo.dns --listen IP --records FILE`` runs inside the demo's network namespace; FILE is
JSON ``{"service": "10.x.y.z", ...}`` that the demo rewrites (atomically) as pods come up, so the
Initializers find ``coordinator`` and the frontend's mesh egress finds ``store``. A name is the service
alone or with the suffixes ``default``, ``default.svc``, ``default.svc.cluster.local``. A records only;
AAAA of a known name answers empty (so resolvers don't wait), anything else NXDOMAIN.

The message handling is sans-IO (``answer``), the server a thin UDP loop. Queries are attacker data from
the host's network: malformed ones get no answer.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

SUFFIXES = ("", ".default", ".default.svc", ".default.svc.cluster.local")
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
TTL = 5


class DnsFormatError(ValueError):
    """A query that is not one well-formed DNS question."""


def _question(msg: bytes) -> tuple[int, int, str, int, int, int]:
    """(id, flags, name, qtype, qclass, end offset of the question)."""
    if len(msg) < 12:
        raise DnsFormatError("shorter than a DNS header")
    ident, flags, qd, an, ns, _ar = struct.unpack("!6H", msg[:12])
    if flags & 0x8000 or qd != 1 or an or ns:
        raise DnsFormatError("not a query with one question")
    labels, pos = [], 12
    while True:
        if pos >= len(msg):
            raise DnsFormatError("name runs past the message")
        length = msg[pos]
        pos += 1
        if length == 0:
            break
        if length > 63 or pos + length > len(msg):  # compression pointers have no place in a question
            raise DnsFormatError("bad label")
        labels.append(msg[pos:pos + length].decode("ascii", errors="replace"))
        pos += length
        if len(labels) > 127:
            raise DnsFormatError("too many labels")
    if pos + 4 > len(msg):
        raise DnsFormatError("question truncated")
    qtype, qclass = struct.unpack("!2H", msg[pos:pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, qclass, pos + 4


def lookup(name: str, records: Mapping[str, str]) -> str | None:
    for service, address in records.items():
        if any(name == service + suffix for suffix in SUFFIXES):
            return address
    return None


def answer(msg: bytes, records: Mapping[str, str]) -> bytes | None:
    """The reply to one query, or None for a malformed one."""
    try:
        ident, flags, name, qtype, qclass, end = _question(msg)
    except DnsFormatError:
        return None
    address = lookup(name, records) if qclass == CLASS_IN else None
    rd = flags & 0x0100
    answers = b""
    if address is None:
        rcode, count = 3, 0  # NXDOMAIN
    elif qtype == TYPE_A:
        rcode, count = 0, 1
        answers = (b"\xc0\x0c" + struct.pack("!2HIH", TYPE_A, CLASS_IN, TTL, 4)
                   + ipaddress.IPv4Address(address).packed)
    else:
        rcode, count = 0, 0  # the name exists, with no record of that type
    header = struct.pack("!6H", ident, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, count, 0, 0)
    return header + msg[12:end] + answers


def _records(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for k, v in raw.items():
        try:
            out[str(k).lower()] = str(ipaddress.IPv4Address(str(v)))
        except ValueError:
            continue
    return out


def serve(listen: str, records: Path, port: int = 53) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, port))
    print(f"event=dns_listening address={listen}:{port} records={records}", flush=True)
    while True:
        msg, peer = sock.recvfrom(512)
        reply = answer(msg, _records(records))
        if reply is not None:
            sock.sendto(reply, peer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo.dns", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--records", type=Path, required=True)
    p.add_argument("--port", type=int, default=53)
    args = p.parse_args(argv)
    serve(args.listen, args.records, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
