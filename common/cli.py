"""Command-line parsing shared by every ``python -m <component>`` entry point.

``ArgumentParser`` is argparse's, except that a subcommand reports its own mistakes: plain argparse hands
an unknown option after a subcommand (``contrast set --bogus``) back to the top-level parser, which
prints the top-level usage, so the user is not shown the options the subcommand does take.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose subcommand parsers reject unknown arguments with their own usage.

    Subcommand parsers are built from the same class (argparse's default), so a subclass keeps its
    behaviour, e.g. an ``error`` override, in its subcommands."""

    _is_subcommand = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubcommandsAction)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._is_subcommand:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


class _SubcommandsAction(argparse._SubParsersAction):  # type: ignore[type-arg]
    """argparse's subparsers action; marks the parsers it creates as subcommands."""

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        parser = super().add_parser(name, **kwargs)
        if isinstance(parser, ArgumentParser):
            parser._is_subcommand = True
        return parser
