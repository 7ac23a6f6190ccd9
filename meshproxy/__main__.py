"""``python -m meshproxy``: run the sidecar, or manage the default-deny rule for the pod image."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import ArgumentParser
from common.logs import setup_logging
from meshproxy.app import Options, run
from meshproxy.certs import DEFAULT_TLS_DIR
from meshproxy.config import from_environ
from meshproxy.errors import ConfigError, MeshProxyError
from meshproxy.netfilter import Netfilter
from meshproxy.proxy import Limits
from meshproxy.rules import render_all

log = logging.getLogger("meshproxy")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m meshproxy", description=(
        "The service-mesh sidecar: run the proxy, or manage the default-deny rule for the pod "
        "image."
    ))
    p.add_argument("--tls-dir", type=Path, default=DEFAULT_TLS_DIR,
                   help="directory with mesh-ca.pem, certChain.pem, key.pem (default %(default)s)")
    p.add_argument("--ready-file", type=Path, default=Path("/ready"), help="default %(default)s")
    p.add_argument("--iptables", default=None,
                   help="iptables backend, used with its ip6tables twin: iptables, iptables-legacy, "
                        "iptables-nft or a path to one (default: $MESHPROXY_IPTABLES, else iptables-legacy "
                        "if present)")
    p.add_argument("--no-netfilter", action="store_true", help="do not touch netfilter (development only)")
    p.add_argument("--tproxy-mark", type=lambda s: int(s, 0), default=None,
                   help="also mark TPROXY'd packets and route the mark to the local table (not Contrast's)")
    p.add_argument("--reload-interval", type=float, default=1.0, help="seconds between certificate checks")
    p.add_argument("--handshake-timeout", type=float, default=Limits.handshake_timeout)
    p.add_argument("--idle-timeout", type=float, default=Limits.idle_timeout)
    p.add_argument("--half-open-timeout", type=float, default=Limits.half_open_timeout)
    p.add_argument("-l", "--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command")
    deny = sub.add_parser("default-deny", help="install or remove the default-deny INPUT rules (IPv4, IPv6)")
    deny.add_argument("action", choices=["install", "remove"])
    sub.add_parser("show-rules", help="validate the environment's configuration and print the rules")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "default-deny":
            nf = Netfilter(args.iptables)
            if args.action == "install":
                nf.install_default_deny()
            else:
                nf.remove_default_deny()
            return 0
        config = from_environ(os.environ)
        if args.command == "show-rules":
            for line in render_all(config, args.tproxy_mark):
                print(line)
            return 0
        limits = Limits(handshake_timeout=args.handshake_timeout, idle_timeout=args.idle_timeout,
                        half_open_timeout=args.half_open_timeout,
                        sweep_interval=min(1.0, args.idle_timeout / 4, args.half_open_timeout / 4))
        options = Options(tls_dir=args.tls_dir, ready_file=args.ready_file, netfilter=not args.no_netfilter,
                          iptables=args.iptables, reload_interval=args.reload_interval,
                          tproxy_mark=args.tproxy_mark, limits=limits)
        asyncio.run(run(config, options))
        return 0
    except ConfigError as exc:
        log.error("event=config_error variable=%s entry=%r reason=%r", exc.variable, exc.entry, exc.reason)
        print(f"meshproxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except MeshProxyError as exc:
        log.error("event=fatal error=%r", str(exc))
        print(f"meshproxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("event=fatal error=%r", str(exc))
        print(f"meshproxy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
