"""python -m coordinator.cli [--workspace-dir DIR] generate|set|verify|recover ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common.cli import ArgumentParser
from common.logs import setup_logging
from coordinator.cli import commands
from coordinator.cli.workspace import Workspace, workspace_from

DESCRIPTION = """\
The data owner's CLI for the Coordinator: generate a manifest, set it, verify the Coordinator,
recover it after a restart. Files are Contrast's workspace files, in --workspace-dir.

Against 'python -m coordinator --simulate-tee': generate --simulate-tee, then
set/verify/recover --simulated-root STATE_DIR/simulated-amd.
"""


GENERATE_DESCRIPTION = """\
YAML mode (paths are .yml/.yaml files or directories): every workload with runtimeClassName
contrast-cc gets the Initializer and, if its pod asks for one, the mesh proxy; its policy is
generated (Kata rules.rego + genpolicy settings) and written into the YAML as Kata's initdata
annotation; the Coordinator is the workload annotated contrast.edgeless.systems/pod-role:
coordinator. manifest.json gets one policy per workload (SANs NAME and *, WorkloadSecretID
group/version/Kind/namespace/name) and the owner keys.

Initdata mode (paths are initdata documents): one policy per document; --coordinator-initdata.
"""


def yaml_options(ws: Workspace, args: argparse.Namespace) -> Any:
    # The generator (and PyYAML, the "host" extra) is needed only here: initdata mode runs without it.
    from coordinator.cli import kube

    return kube.options_from_args(ws, args)


def is_yaml_mode(paths: list[str]) -> bool:
    return any(Path(p).is_dir() or Path(p).suffix in (".yml", ".yaml") for p in paths)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="contrast", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace-dir", default=".", help="where manifest.json and keys live (default .)")
    p.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="policies for Kubernetes YAML (or initdata) and manifest.json",
                       description=GENERATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("workloads", nargs="*", metavar="PATH",
                   help="YAML files or directories (YAML mode), or INITDATA[:NAME] documents; NAME (default: "
                        "file stem) is the SAN and secret ID")
    g.add_argument("--coordinator-initdata", type=Path, help="initdata mode: the Coordinator's initdata")
    g.add_argument("-p", "--policy", type=Path,
                   help="YAML mode: Kata's rules.rego (default WORKSPACE/rules.rego)")
    g.add_argument("-s", "--settings", type=Path,
                   help="YAML mode: genpolicy settings file or directory (default WORKSPACE/settings.json)")
    g.add_argument("--images", type=Path,
                   help="YAML mode: JSON image descriptions instead of pulling configs")
    g.add_argument("--oci-layout", type=Path, help="YAML mode: read images from this OCI layout")
    g.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="YAML mode: registry reachable over plain HTTP (loopback always is)")
    g.add_argument("-c", "--genpolicy-cache-path", type=Path,
                   help="YAML mode: blob and layer cache (default WORKSPACE/layers-cache)")
    g.add_argument("--initializer-image", help="YAML mode: the Initializer image (pinned by digest)")
    g.add_argument("--service-mesh-image", help="YAML mode: the mesh proxy image (pinned by digest)")
    g.add_argument("--image-puller-config", type=Path, metavar="TOML",
                   help="YAML mode: the guest image puller's registry settings (CA, credentials), "
                        "measured into every workload's initdata as imagepuller.toml")
    g.add_argument("--skip-initializer", action="store_true", help="YAML mode: inject no Initializer")
    g.add_argument("--skip-service-mesh", action="store_true", help="YAML mode: inject no mesh proxy")
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
        s.add_argument("--collateral-dir", type=Path, metavar="DIR",
                       help="offline AMD CRLs / Intel TDX collateral (layout in docs/coordinator.md); "
                            "default: fetch from AMD KDS / Intel PCS, cached in WORKSPACE/collateral-cache")
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
        if args.command == "generate" and is_yaml_mode(args.workloads):
            missing, lines = commands.generate_yaml(
                ws, [Path(w) for w in args.workloads], yaml_options(ws, args), args.reference_values,
                args.disable_updates, args.seedshare_key_bits, args.simulate_tee)
            for line in lines:
                print(line, file=sys.stderr)
            print(f"wrote {ws.path('manifest.json')} and the initdata annotations into the YAML")
            for problem in missing:
                print(f"  fill in: {problem}", file=sys.stderr)
        elif args.command == "generate":
            if args.coordinator_initdata is None:
                p.error("generate: --coordinator-initdata is required for initdata documents")
            missing = commands.generate(ws, args.reference_values, args.workloads, args.coordinator_initdata,
                                        args.disable_updates, args.seedshare_key_bits, args.simulate_tee)
            print(f"wrote {ws.path('manifest.json')}")
            for problem in missing:
                print(f"  fill in: {problem}", file=sys.stderr)
        elif args.command == "bind-owners":
            args.out.write_bytes(commands.bind_owners(ws, args.coordinator_initdata.read_bytes()))
            print(f"wrote {args.out}: launch the Coordinator with it and pass it to generate")
        elif args.command == "set":
            commands.set_manifest(ws, args.coordinator, args.retry_for, args.simulated_root,
                                  args.collateral_dir)
            print("manifest set; wrote coordinator-root-ca.pem, mesh-ca.pem")
        elif args.command == "verify":
            commands.verify(ws, args.coordinator, args.simulated_root, args.collateral_dir)
            print("the Coordinator is attested and runs the expected manifest; wrote verify/")
        else:
            commands.recover(ws, args.coordinator, args.force, args.simulated_root, args.allow_rollback,
                             collateral_dir=args.collateral_dir)
            print("Coordinator recovered")
    except (commands.CliError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
