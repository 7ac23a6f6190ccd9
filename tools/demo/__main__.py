"""python -m tools.demo [--keep] [--report FILE] | down | --loopback [--keep] [--skip-mesh]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--loopback" in argv:
        from .run import main as loopback

        return loopback([a for a in argv if a != "--loopback"])
    from .cluster import down, kata_default, run_demo
    from .state import DEFAULT_STATE

    p = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="A whole confidential deployment on this machine: pod VMs under containerd with our "
        "shim, "
        "generated policies, an attested Coordinator, mesh certificates, mTLS between two pods, and the "
        "host's attacks failing (docs/demo.md). `down` removes what a --keep run left.")
    p.add_argument("command", nargs="?", choices=["up", "down"], default="up")
    p.add_argument("--keep", action="store_true",
                   help="leave it running; `python -m tools.demo down` removes it")
    p.add_argument("--report", type=Path, help="write the steps as JSON to FILE")
    p.add_argument("--state", type=Path, default=DEFAULT_STATE, help="the record of what the demo made")
    p.add_argument("--kata-dir", type=Path, default=kata_default(),
                   help="Kata's rules.rego and genpolicy-settings.json (the Kata release the nodes run)")
    p.add_argument("--loopback", action="store_true",
                   help="the loopback demo instead (no VM, no root; see docs/demo.md)")
    args = p.parse_args(argv)
    if args.command == "down":
        return down(args.state)
    return run_demo(args.state, keep=args.keep, report=args.report, kata=args.kata_dir)


sys.exit(main())
