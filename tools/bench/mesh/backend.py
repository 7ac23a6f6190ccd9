"""Plain TCP backend for the benchmark: sink ports (8-byte length header, then that many bytes, reply
b"OK") and echo ports (64-byte requests echoed). Usage: backend.py SINK_PORT[,SINK_PORT] ECHO_PORT[,...]"""

import socket
import struct
import sys
import threading


def sink(c: socket.socket) -> None:
    with c:
        n = struct.unpack("!Q", c.recv(8, socket.MSG_WAITALL))[0]
        buf = memoryview(bytearray(1 << 20))
        got = 0
        while got < n:
            k = c.recv_into(buf, min(len(buf), n - got))
            if not k:
                return
            got += k
        c.sendall(b"OK")


def echo(c: socket.socket) -> None:
    with c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (d := c.recv(64, socket.MSG_WAITALL)) and len(d) == 64:
            c.sendall(d)


def serve(port: int, fn) -> None:  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()


if __name__ == "__main__":
    threads = []
    for spec, fn in ((sys.argv[1], sink), (sys.argv[2], echo)):
        for p in spec.split(","):
            threads.append(threading.Thread(target=serve, args=(int(p), fn), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
