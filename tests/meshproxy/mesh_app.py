"""The test "application": plaintext HTTP/1.0-ish servers on the given ports.

Every response body is ``app port=<port> peer=<ip>``, so a test sees which port the request reached and
that it arrived in plaintext. The servers are dual-stack (``::`` with IPV6_V6ONLY off), like most
applications: an IPv4 peer is reported as its dotted address, an IPv6 peer as its IPv6 address.
Usage: app_server.py PORT [PORT...]
"""

import hashlib
import socket
import struct
import sys
import threading


def digest(conn: socket.socket) -> None:
    """Port 8090: an 8-byte length, then that many bytes; answers with their SHA-256 (hex)."""
    with conn:
        header = conn.recv(8, socket.MSG_WAITALL)
        remaining = struct.unpack("!Q", header)[0]
        h = hashlib.sha256()
        while remaining:
            chunk = conn.recv(min(remaining, 1 << 20))
            if not chunk:
                return
            h.update(chunk)
            remaining -= len(chunk)
        conn.sendall(h.hexdigest().encode())


def handle(conn: socket.socket, port: int, peer: str) -> None:
    if port == 8090:
        digest(conn)
        return
    with conn:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        body = f"app port={port} peer={peer}\n".encode()
        if data.startswith(b"ECHO"):
            conn.sendall(data)
            return
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def serve(port: int) -> None:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(128)
    while True:
        conn, addr = s.accept()
        peer = addr[0].removeprefix("::ffff:") if "." in addr[0] else addr[0]
        threading.Thread(target=handle, args=(conn, port, peer), daemon=True).start()


if __name__ == "__main__":
    ports = [int(p) for p in sys.argv[1:]]
    for p in ports[1:]:
        threading.Thread(target=serve, args=(p,), daemon=True).start()
    serve(ports[0])
