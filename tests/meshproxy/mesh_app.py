"""The test "application": plaintext HTTP/1.0-ish servers on the given ports.

Every response body is ``app port=<port> peer=<ip>``, so a test sees which port the request reached and
that it arrived in plaintext. Usage: app_server.py PORT [PORT...]
"""

import socket
import sys
import threading


def handle(conn: socket.socket, port: int, peer: str) -> None:
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
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    while True:
        conn, addr = s.accept()
        threading.Thread(target=handle, args=(conn, port, addr[0]), daemon=True).start()


if __name__ == "__main__":
    ports = [int(p) for p in sys.argv[1:]]
    for p in ports[1:]:
        threading.Thread(target=serve, args=(p,), daemon=True).start()
    serve(ports[0])
