"""``python -m image containers --out DIR``: the container images of our own parts as an OCI layout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p: argparse.ArgumentParser = subparsers.add_parser(
        "containers",
        help="build the Initializer, mesh proxy, Coordinator and demo images (OCI layout)",
        description="Build the container images of this project's parts offline and reproducibly from "
        "Debian's packages and this checkout, into an OCI layout (tagged by name). Writes "
        "DIR/images.json: name -> manifest digest.",
    )
    p.add_argument("--out", type=Path, required=True, help="OCI layout directory to create")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="build only these images")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2], help=argparse.SUPPRESS)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from image.containers.build import IMAGES, build_layout

    specs = [s for s in IMAGES if not args.only or s.name in args.only]
    unknown = set(args.only) - {s.name for s in IMAGES}
    if unknown:
        print(
            f"containers: unknown image {sorted(unknown)}, expected some of {[s.name for s in IMAGES]}",
            file=sys.stderr,
        )
        return 2
    if args.out.exists():
        print(f"containers: {args.out} exists; give a new directory", file=sys.stderr)
        return 2
    built = build_layout(
        args.repo, args.out, specs, progress=lambda m: print(f"event=progress {m}", file=sys.stderr)
    )
    summary = {name: str(desc.digest) for name, desc in built.items()}
    (args.out / "images.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    for name, digest in sorted(summary.items()):
        print(f"{name}@{digest}")
    return 0
