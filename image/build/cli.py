"""``python -m image build --out DIR``: build the pod-VM image and print its description."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import ArgumentParser

from .builder import BuildOptions, build_image, default_cache_dir
from .errors import BuildError

__all__ = ["add_parser", "main", "run"]


def _repo_default() -> Path:
    return Path(__file__).resolve().parents[2]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p: argparse.ArgumentParser = subparsers.add_parser("build", help="build the pod-VM image")
    _configure(p)
    return p


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory (image.json and artifacts)")
    p.add_argument("--repo", type=Path, default=_repo_default(), help="project checkout to install")
    p.add_argument("--kernel-flavour", default="cloud-amd64", help="Debian linux-image flavour")
    p.add_argument("--initdata", type=Path, help="initdata TOML to write as initdata.img")
    p.add_argument("--source-date-epoch", type=int, default=None,
                   help="timestamp for every file (default: $SOURCE_DATE_EPOCH or 0)")
    p.add_argument("--compression", default="lz4hc", help="erofs compressor (lz4hc, lz4 or '' for none)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="image cache keyed by inputs digest (default $CG_IMAGE_CACHE or "
                        "/var/cache/confidential-guest/images)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    epoch = args.source_date_epoch
    if epoch is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    try:
        desc = build_image(BuildOptions(out=args.out, repo=args.repo, kernel_flavour=args.kernel_flavour,
                                        source_date_epoch=epoch, compression=args.compression,
                                        initdata_toml=args.initdata, cache_dir=cache, quiet=args.quiet))
    except BuildError as e:
        print(f"image build: error: {e}", file=sys.stderr)
        return 1
    print(desc.to_json(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m image.build",
                       description=(
                           "Build the pod-VM image into --out DIR and print its description (image.json)."
                       ))
    _configure(p)
    args = p.parse_args(argv)
    return int(args.func(args))
