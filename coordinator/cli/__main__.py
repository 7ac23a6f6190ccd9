"""python -m coordinator.cli [--workspace-dir DIR] generate|set|verify|recover ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import ArgumentParser
from common.logs import setup_logging
from coordinator.cli import commands
from coordinator.cli.workspace import workspace_from

DESCRIPTION = """\
The data owner's CLI for the Coordinator: generate a manifest, set it, verify the Coordinator,
recover it after a restart. Files are Contrast's workspace files, in --workspace-dir.

Against 'python -m coordinator --simulate-tee': generate --simulate-tee, then
set/verify/recover --simulated-root STATE_DIR/simulated-amd.
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="contrast", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace-dir", default=".", help="where manifest.json and keys live (default .)")
    p.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="write manifest.json from initdata documents",
                       description="Write manifest.json: one policy per initdata document (its SHA-256), "
                                   "the reference values, the owner keys; lists what is still to fill in.")
    g.add_argument("workloads", nargs="*", metavar="INITDATA[:NAME]",
                   help="a workload's initdata document; NAME (default: file stem) is its SAN and secret ID")
    g.add_argument("--coordinator-initdata", type=Path, required=True, help="the Coordinator's initdata")
    g.add_argument("--reference-values", type=Path, help="JSON file with the ReferenceValues object")
    g.add_argument("-d", "--disable-updates", action="store_true",
                   help="empty WorkloadOwnerKeyDigests: once set, nobody can change the manifest again")
    g.add_argument("--simulate-tee", action="store_true",
                   help="reference values for a 'python -m coordinator --simulate-tee' (Simulated-SNP, "
                        "all-zero measurement) instead of --reference-values")
    g.add_argument("--seedshare-key-bits", type=int, default=4096, help=argparse.SUPPRESS)
    bind_help = "write the Coordinator's initdata with owners.json naming this workspace's owner keys"
    b = sub.add_parser("bind-owners", help=bind_help,
                       description=bind_help[0].upper() + bind_help[1:] + ". Launch the Coordinator "
                                   "with OUT and pass OUT to generate --coordinator-initdata: the "
                                   "Coordinator then takes a first manifest and a recovery only from "
                                   "these keys.")
    b.add_argument("--coordinator-initdata", type=Path, required=True, help="the Coordinator's initdata")
    b.add_argument("--out", type=Path, required=True, help="where to write the bound initdata")
    helps = {
        "set": "attest the Coordinator, then set manifest.json (retries while it is unreachable)",
        "verify": "attest the Coordinator and compare its latest manifest with manifest.json; writes verify/",
        "recover": "attest a restarted Coordinator and send it the seed from our share in seed-shares.json",
    }
    for name, text in helps.items():
        s = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        s.add_argument("-c", "--coordinator", required=True, help="HOST[:PORT] of the UserAPI (port 1313)")
        s.add_argument("--simulated-root", type=Path, metavar="DIR",
                       help="trust Simulated-SNP reference values against the simulated AMD root in DIR "
                            "(the Coordinator's STATE_DIR/simulated-amd); "
                            "default $ATTESTATION_SIMULATED_ROOT")
        if name == "recover":
            s.add_argument("--force", action="store_true",
                           help="set Force in the request: skip the Coordinator's check for ready peers")
            s.add_argument("--allow-rollback", action="store_true",
                           help="recover even if the history lacks the transition this workspace last saw "
                                "(latest-transition); without it such a rollback is refused")
        if name == "set":
            s.add_argument("--retry-for", type=float, default=180.0, metavar="SECONDS",
                           help="keep retrying an unreachable Coordinator this long (default 180)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    setup_logging(args.log_level, with_time=False)
    ws = workspace_from(args.workspace_dir)
    try:
        if args.command == "generate":
            missing = commands.generate(ws, args.reference_values, args.workloads, args.coordinator_initdata,
                                        args.disable_updates, args.seedshare_key_bits, args.simulate_tee)
            print(f"wrote {ws.path('manifest.json')}")
            for problem in missing:
                print(f"  fill in: {problem}", file=sys.stderr)
        elif args.command == "bind-owners":
            args.out.write_bytes(commands.bind_owners(ws, args.coordinator_initdata.read_bytes()))
            print(f"wrote {args.out}: launch the Coordinator with it and pass it to generate")
        elif args.command == "set":
            commands.set_manifest(ws, args.coordinator, args.retry_for, args.simulated_root)
            print("manifest set; wrote coordinator-root-ca.pem, mesh-ca.pem")
        elif args.command == "verify":
            commands.verify(ws, args.coordinator, args.simulated_root)
            print("the Coordinator is attested and runs the expected manifest; wrote verify/")
        else:
            commands.recover(ws, args.coordinator, args.force, args.simulated_root, args.allow_rollback)
            print("Coordinator recovered")
    except (commands.CliError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
