"""Benchmark client: client.py HOST TP_PORT ECHO_PORT tls|plain CERTDIR [GiB] [N]

Throughput: 1 GiB in 1 MiB sendall()s to a sink, which answers OK. Latency: N 64-byte request/response
round trips on one connection with TCP_NODELAY (500 warm-up). TLS 1.3 with a client certificate, server
verified against the mesh CA. Prints one JSON line."""

import json
import socket
import ssl
import struct
import sys
import time

host, tp_port, echo_port, mode, certdir = (
    sys.argv[1],
    int(sys.argv[2]),
    int(sys.argv[3]),
    sys.argv[4],
    sys.argv[5],
)
gib = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
N = int(sys.argv[7]) if len(sys.argv) > 7 else 20000
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.check_hostname = False
ctx.load_verify_locations(f"{certdir}/mesh-ca.pem")
ctx.load_cert_chain(f"{certdir}/certChain.pem", f"{certdir}/key.pem")


def conn(port: int) -> socket.socket:
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(s) if mode == "tls" else s


out: dict[str, object] = {}
if tp_port:
    total = int(gib * 1024) << 20  # whole MiB: the sink must get exactly what we send
    s = conn(tp_port)
    if mode == "tls":
        out["tls"] = f"{s.version()} {s.cipher()[0]}"  # type: ignore[attr-defined]
    chunk = b"\0" * (1 << 20)
    t0 = time.perf_counter()
    s.sendall(struct.pack("!Q", total))
    sent = 0
    while sent < total:
        s.sendall(chunk)
        sent += len(chunk)
    reply = b""
    while len(reply) < 2 and (part := s.recv(2 - len(reply))):
        reply += part
    if reply != b"OK":
        sys.exit(f"sink replied {reply!r} instead of b'OK'")
    el = time.perf_counter() - t0
    s.close()
    out["mbps"] = total / el / 1e6
if echo_port:
    s = conn(echo_port)
    msg = b"q" * 64
    lat = []
    for i in range(N + 500):
        t0 = time.perf_counter()
        s.sendall(msg)
        d = b""
        while len(d) < 64:
            d += s.recv(64 - len(d))
        if i >= 500:
            lat.append(time.perf_counter() - t0)
    lat.sort()
    s.close()
    out["p50_us"] = lat[len(lat) // 2] * 1e6
    out["p99_us"] = lat[int(len(lat) * 0.99)] * 1e6
print(json.dumps(out))
