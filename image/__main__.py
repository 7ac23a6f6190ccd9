"""``python -m image <command> ...``: one entry point for the pod-VM image tools.

Commands come from plug-in modules, each imported only if it exists, so the helpers building the
image (``image.build.cli``) and the measurements (``image.measure.cli``) plug in without touching
this file. Contract for a plug-in module (see docs/verity.md):

* it defines ``add_parser(subparsers) -> None``, which calls ``subparsers.add_parser(name, ...)``
  once per command it provides and sets ``func`` on each: ``parser.set_defaults(func=handler)``;
* ``handler(args: argparse.Namespace) -> int`` runs the command and returns the exit code (it
  reports its own errors on stderr; an uncaught exception is a bug and shows a traceback);
* importing the module is cheap: heavy imports go inside the handlers.

Only the plug-in that owns the command word is imported when the word is in ``COMMANDS`` (saves
~70 ms of imports per run); an unknown word or ``--help`` loads every plug-in, so a new command
works before it is listed here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from common.cli import ArgumentParser
from common.logs import setup_logging

__all__ = ["COMMANDS", "PLUGINS", "main"]

# Order = order in --help.
PLUGINS = (
    "image.build.cli", "image.verity.cli", "image.measure.cli", "image.containers.cli", "runtime.config_cli",
)
COMMANDS = {
    "build": "image.build.cli",
    "verity": "image.verity.cli",
    "measure": "image.measure.cli",
    "reference-values": "image.measure.cli",
    "containers": "image.containers.cli",
    "runtime-config": "runtime.config_cli",
}


def _load(module: str) -> object | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Absent plug-in: skip. A plug-in that exists but imports something missing is a real error.
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity (stderr)")


def _plugins_for(argv: list[str]) -> tuple[str, ...]:
    pre = argparse.ArgumentParser(add_help=False)
    _add_global_options(pre)
    _, rest = pre.parse_known_args(argv)
    if rest and rest[0] in COMMANDS:
        return (COMMANDS[rest[0]],)
    return PLUGINS


def build_parser(plugins: tuple[str, ...] = PLUGINS) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m image", description="Pod-VM image tools.")
    _add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name in plugins:
        module = _load(name)
        if module is not None:
            module.add_parser(subparsers)  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_plugins_for(argv)).parse_args(argv)
    setup_logging(args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
