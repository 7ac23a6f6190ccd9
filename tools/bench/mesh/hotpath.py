"""Deterministic cost of the relay's hot path: ``python -m tools.bench.mesh.hotpath``.

One process, no event loop and no wakeups: a TLS client session and a plaintext peer sit on socketpairs
and the relay's readiness callbacks are called directly, so the number is our CPU per 64-byte round trip
(two events) without scheduler noise. The second line is the same socket and TLS work done inline,
without the relay, as the floor.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


class _NoLoop:
    """The relay only registers interest; here we call its callbacks ourselves."""

    def add_reader(self, *args: Any) -> None: ...
    def remove_reader(self, *args: Any) -> None: ...
    def add_writer(self, *args: Any) -> None: ...
    def remove_writer(self, *args: Any) -> None: ...


def main() -> int:
    sys.path.insert(0, str(REPO))
    from meshproxy.certs import load_credentials
    from meshproxy.relay import Buffers, DirectionStats, Relay
    from meshproxy.session import TLSSession
    from tests.meshproxy.mesh_pki import MeshPKI

    pki = MeshPKI.create("hotpath")
    work = Path(tempfile.mkdtemp(prefix="hotpath-"))
    server = TLSSession(load_credentials(pki.write_workload(work / "b", "b")).server_mtls, server_side=True)
    client = TLSSession(load_credentials(pki.write_workload(work / "a", "a")).client, server_side=False)
    for _ in range(6):
        for side in (client, server):
            if not side.handshake_complete:
                side.do_handshake()
        if client.has_data_to_send:
            server.receive_ciphertext(client.data_to_send())
        if server.has_data_to_send:
            client.receive_ciphertext(server.data_to_send())
    tls_proxy, tls_peer = socket.socketpair()
    plain_proxy, app = socket.socketpair()
    tls_proxy.setblocking(False)
    plain_proxy.setblocking(False)
    relay = Relay(_NoLoop(), tls_proxy, plain_proxy, server, DirectionStats(), Buffers(),  # type: ignore[arg-type]
                  lambda _: None)
    relay.start()
    msg, n = b"x" * 64, 50000
    out = memoryview(bytearray(128))

    def with_relay() -> None:
        client.send_plaintext(msg)
        tls_peer.send(client.data_to_send())
        relay._on_tls_readable()
        app.recv(128)
        app.send(msg)
        relay._on_plain_readable()
        client.receive_ciphertext(tls_peer.recv(256))
        client.read_plaintext(out)

    def floor() -> None:
        client.send_plaintext(msg)
        tls_peer.send(client.data_to_send())
        server.receive_ciphertext(tls_proxy.recv(256))
        server.read_plaintext(out)
        plain_proxy.send(msg)
        app.recv(128)
        app.send(msg)
        server.send_plaintext(plain_proxy.recv(128))
        tls_proxy.send(server.data_to_send())
        client.receive_ciphertext(tls_peer.recv(256))
        client.read_plaintext(out)

    for name, fn in (("relay callbacks", with_relay), ("inline floor", floor)):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
        print(f"| {name} | {best:.2f} µs per 64-byte round trip (best of 5 x {n}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
