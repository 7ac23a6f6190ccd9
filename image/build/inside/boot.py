"""Started by the image's init: the hybrid-vsock relay (if the port exists) and the guest agent.

The agent is ``python -m guest serve`` once the guest package provides it; until then a
stand-in echo service listens on the agent's vsock port so boot, channel and harness can be
tested end to end. ``MARK agent-listening`` on the console is what the boot benchmark times.
"""

from __future__ import annotations

import socket
import sys
import threading

__all__ = ["AGENT_VSOCK_PORT", "main"]

AGENT_VSOCK_PORT = 1024


def _log(msg: str) -> None:
    try:
        with open("/proc/uptime") as f:
            uptime = f.read().split()[0]
    except OSError:
        uptime = "?"
    print(f"MARK {msg} uptime={uptime}", flush=True)


def _run_relay() -> None:
    # Imported here: asyncio costs ~0.3 s under TCG and is not needed before the agent listens.
    import asyncio

    from .relay import HVSOCK_PORT_NAME, find_port, serve

    port = find_port(HVSOCK_PORT_NAME)
    if port is not None:
        asyncio.run(serve(port))


def _start_relay() -> None:
    threading.Thread(target=_run_relay, name="hvsock-relay", daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def echo_agent(port: int = AGENT_VSOCK_PORT) -> None:
    srv = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    srv.bind((socket.VMADDR_CID_ANY, port))
    srv.listen(16)
    _log(f"agent-listening vsock:{port} kind=echo")
    _start_relay()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def main() -> int:
    echo_agent()
    return 0


if __name__ == "__main__":
    sys.exit(main())
