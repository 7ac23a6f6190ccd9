"""``python -m image runtime-config --image DIR --out FILE``: a runtime configuration for an image.

A plug-in of ``python -m image`` (see image/__main__.py): writes the TOML the shim reads
(runtime.config) for an image directory written by ``python -m image build --out DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("runtime-config", help="write the shim's runtime configuration for an image")
    p.add_argument("--image", required=True, type=Path, help="image directory (python -m image build --out)")
    p.add_argument("--out", required=True, type=Path, help="TOML file to write")
    p.add_argument("--image-mode", default="host-erofs", choices=["host-erofs", "guest-pull"])
    p.add_argument("--emptydir-mode", default="block-encrypted", choices=["block-encrypted", "shared-fs"],
                   help="a disk emptyDir as an encrypted disk of the pod VM (default) or files copied in")
    p.add_argument("--emptydir-size-mib", default=0, type=int,
                   help="size of each emptyDir disk (default 0: the capacity of the emptyDir's filesystem)")
    p.add_argument(
        "--default-initdata",
        type=Path,
        default=None,
        help="initdata TOML for pods without the cc_init_data annotation (default: refuse them)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common.files import atomic_write
    from image.build import DESCRIPTION_NAME

    from .config import load_config, render
    from .errors import ConfigError

    image = args.image.resolve()
    if not (image / DESCRIPTION_NAME).is_file():
        print(
            f"runtime-config: {image} has no {DESCRIPTION_NAME} (build it with python -m image build --out)",
            file=sys.stderr,
        )
        return 1
    initdata = args.default_initdata.resolve() if args.default_initdata else None
    text = render(image, args.image_mode, initdata, emptydir_mode=args.emptydir_mode,
                  emptydir_size_mib=args.emptydir_size_mib)
    atomic_write(args.out, text.encode(), mode=0o644)
    try:
        load_config(args.out.resolve())
    except ConfigError as e:  # what we wrote must be what the shim accepts
        print(f"runtime-config: {e}", file=sys.stderr)
        return 1
    print(args.out)
    return 0
