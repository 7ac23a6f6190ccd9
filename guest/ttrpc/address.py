"""ttrpc addresses as kata-agent and ttrpc-rust spell them: unix:///path, unix://@abstract,
vsock://CID:PORT (CID -1 = any) and tcp://host:port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import AddressError

VMADDR_CID_ANY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Address:
    scheme: Literal["unix", "vsock", "tcp"]
    path: str = ""  # unix: filesystem path, or "\0name" for an abstract socket
    host: str = ""  # tcp
    port: int = 0  # tcp, vsock
    cid: int = 0  # vsock

    def __str__(self) -> str:
        if self.scheme == "unix":
            return "unix://" + ("@" + self.path[1:] if self.path.startswith("\0") else self.path)
        if self.scheme == "vsock":
            return f"vsock://{-1 if self.cid == VMADDR_CID_ANY else self.cid}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _port(text: str, address: str, expected: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 0xFFFFFFFF:
        raise AddressError(address, expected)
    return int(text)


def parse_address(s: str) -> Address:
    scheme, sep, rest = s.partition("://")
    if not sep:
        raise AddressError(s, "unix:///path, vsock://CID:PORT or tcp://host:port")
    if scheme == "unix":
        if rest.startswith("@") and len(rest) > 1:
            return Address("unix", path="\0" + rest[1:])
        if not rest.startswith("/"):
            raise AddressError(s, "unix:///absolute/path or unix://@abstract")
        return Address("unix", path=rest)
    if scheme == "vsock":
        expected = "vsock://CID:PORT with CID -1 (any) or 0..4294967295"
        cid_text, sep, port_text = rest.rpartition(":")
        if not sep:
            raise AddressError(s, expected)
        cid = VMADDR_CID_ANY if cid_text == "-1" else _port(cid_text, s, expected)
        return Address("vsock", cid=cid, port=_port(port_text, s, expected))
    if scheme == "tcp":
        expected = "tcp://host:port with port 0..65535"
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise AddressError(s, expected)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = _port(port_text, s, expected)
        if port > 0xFFFF:
            raise AddressError(s, expected)
        return Address("tcp", host=host, port=port)
    raise AddressError(s, "scheme unix://, vsock:// or tcp://")
