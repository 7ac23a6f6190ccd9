"""Started by the image's init: the hybrid-vsock relay (if the port exists) and the guest agent.

The agent is ``python -m guest serve`` (the policy agent with its builtin backend, listening on
vsock port 1024; crun runs the containers). With
``cg.agent=echo`` on the command line a stand-in echo service listens on port 1024 instead
(``MARK agent-listening``), which the in-guest test runs use. The proxy's ``event=serving``
line and ``MARK agent-listening`` are what the boot benchmark times.
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


def _cmdline_arg(name: str) -> str | None:
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        return None
    for w in words:
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
    return None


def policy_agent() -> int:
    """``python -m guest serve``: the policy agent with its in-process backend (``--backend builtin``),
    the relay on a thread of this process. ``event=serving`` marks listening."""
    import runpy

    _start_relay()
    # In this process (not a child): a second interpreter start costs ~0.7 s under TCG.
    sys.argv = ["guest", "serve", "--backend", "builtin"]
    hostdata = _cmdline_arg("cg.test.hostdata")
    if hostdata is not None:
        # Test boots of a TEE-less VM: HOST_DATA taken from the kernel command line. The command
        # line is measured, so a VM launched with this flag has another launch digest than the
        # image's reference values and is never attested by the Coordinator.
        sys.argv += ["--evidence", f"snp:{hostdata}"]
    try:
        runpy.run_module("guest", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def main() -> int:
    # The policy agent (python -m guest serve) unless the measured command line says cg.agent=echo
    # (a stand-in echo service, used by the in-guest test runs for a lighter boot).
    import importlib.util

    choice = _cmdline_arg("cg.agent")
    if choice != "echo" and importlib.util.find_spec("guest.cli") is not None:
        return policy_agent()
    echo_agent()
    return 0


if __name__ == "__main__":
    sys.exit(main())
