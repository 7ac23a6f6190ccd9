"""``python -m image <command> ...``: one entry point for the pod-VM image tools.

Commands come from plug-in modules, each imported only if it exists, so the helpers building the
image (``image.build.cli``) and the measurements (``image.measure.cli``) plug in without touching
this file. Contract for a plug-in module (see docs/verity.md):

* it defines ``add_parser(subparsers) -> None``, which calls ``subparsers.add_parser(name, ...)``
  once per command it provides and sets ``func`` on each: ``parser.set_defaults(func=handler)``;
* ``handler(args: argparse.Namespace) -> int`` runs the command and returns the exit code (it
  reports its own errors on stderr; an uncaught exception is a bug and shows a traceback);
* importing the module is cheap: heavy imports go inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["PLUGINS", "main"]

# Order = order in --help.
PLUGINS = ("image.build.cli", "image.verity.cli", "image.measure.cli")


def _load(module: str) -> object | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Absent plug-in: skip. A plug-in that exists but imports something missing is a real error.
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m image", description="Pod-VM image tools.")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity (stderr)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name in PLUGINS:
        module = _load(name)
        if module is not None:
            module.add_parser(subparsers)  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
