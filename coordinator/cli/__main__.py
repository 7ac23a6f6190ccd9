"""python -m coordinator.cli [--workspace-dir DIR] generate|set|verify|recover ..."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from coordinator.cli import commands
from coordinator.cli.workspace import workspace_from


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="contrast", description="data-owner CLI for the Coordinator")
    p.add_argument("--workspace-dir", default=".", help="where manifest.json and keys live")
    p.add_argument("--log-level", default="WARNING")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write manifest.json from initdata documents")
    g.add_argument("workloads", nargs="*", help="INITDATA.toml[:NAME] per workload")
    g.add_argument("--coordinator-initdata", type=Path, required=True, help="the Coordinator's initdata")
    g.add_argument("--reference-values", type=Path, help="JSON file with the ReferenceValues object")
    g.add_argument("-d", "--disable-updates", action="store_true")
    g.add_argument("--seedshare-key-bits", type=int, default=4096, help=argparse.SUPPRESS)
    for name in ("set", "verify", "recover"):
        s = sub.add_parser(name)
        s.add_argument("-c", "--coordinator", required=True, help="HOST[:PORT] of the UserAPI")
        if name == "recover":
            s.add_argument("--force", action="store_true")
        if name == "set":
            s.add_argument("--retry-for", type=float, default=180.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="level=%(levelname)s %(message)s")
    ws = workspace_from(args.workspace_dir)
    try:
        if args.command == "generate":
            missing = commands.generate(ws, args.reference_values, args.workloads, args.coordinator_initdata,
                                        args.disable_updates, args.seedshare_key_bits)
            print(f"wrote {ws.path('manifest.json')}")
            for problem in missing:
                print(f"  fill in: {problem}", file=sys.stderr)
        elif args.command == "set":
            commands.set_manifest(ws, args.coordinator, args.retry_for)
            print("manifest set; wrote coordinator-root-ca.pem, mesh-ca.pem")
        elif args.command == "verify":
            commands.verify(ws, args.coordinator)
            print("the Coordinator is attested and runs the expected manifest; wrote verify/")
        else:
            commands.recover(ws, args.coordinator, args.force)
            print("Coordinator recovered")
    except (commands.CliError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
