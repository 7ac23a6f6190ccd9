"""A test client for either address family: connect, optionally speak TLS, send one request, print the answer.

Usage: mesh_probe.py ADDRESS PORT [--scope IFINDEX] [--tls DIR [--no-cert]] [--timeout S]

ADDRESS is an IPv4 or IPv6 literal; ``--scope`` is the zone of a link-local IPv6 address. With ``--tls`` the
server is verified against ``DIR/mesh-ca.pem`` (no host name check: mesh certificates carry no pod IPs) and
``DIR/certChain.pem`` + ``key.pem`` are presented unless ``--no-cert``. Prints the response body and exits 0,
or prints ``error=<kind>`` and exits 1: ``timeout`` (dropped), ``refused``, ``reset``, ``tls`` or ``eof``.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("port", type=int)
    p.add_argument("--scope", type=int, default=0)
    p.add_argument("--tls", default=None)
    p.add_argument("--no-cert", action="store_true")
    p.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args()
    if ":" in args.address:
        family, address = socket.AF_INET6, (args.address, args.port, 0, args.scope)
    else:
        family, address = socket.AF_INET, (args.address, args.port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    try:
        sock.connect(address)
        if args.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(f"{args.tls}/mesh-ca.pem")
            if not args.no_cert:
                ctx.load_cert_chain(f"{args.tls}/certChain.pem", f"{args.tls}/key.pem")
            sock = ctx.wrap_socket(sock)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        print("error=timeout")
        return 1
    except ConnectionRefusedError:
        print("error=refused")
        return 1
    except ConnectionResetError:
        print("error=reset")
        return 1
    except ssl.SSLError as exc:
        print(f"error=tls detail={exc.reason}")
        return 1
    finally:
        sock.close()
    if not data:
        print("error=eof")
        return 1
    sys.stdout.write(data.partition(b"\r\n\r\n")[2].decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
