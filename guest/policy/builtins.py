"""Lenient builtins: kata-agent's ``set_strict_builtin_errors(false)`` for the Python binding.

kata-agent turns strict builtin errors off, so a builtin that fails (``to_number("abc")``) makes the
rule body undefined instead of aborting the whole query. The Python binding of regorus has no such
switch and aborts; 7 of kata's policy test cases depend on the difference (``is_ip`` in rules.rego
calls ``to_number`` on parts of attacker-chosen env values).

Faithful fix: each builtin that can fail on request data is registered as an extension under its own
name. The extension asks a private, plain regorus engine to evaluate the real builtin on the same
arguments and returns its value; if that raises, it returns ``None``, which regorus treats as
undefined. The values are regorus's own, so only the error behaviour changes, which is exactly what the
strict flag does. Builtins regorus documents as ignoring the flag are unaffected either way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import regorus

__all__ = ["LENIENT_BUILTINS", "install_lenient_builtins"]

# name -> number of arguments. Only builtins rules.rego applies to request-derived values and that
# can fail on a well-typed argument are listed; regex builtins keep regorus's Rust regex semantics.
LENIENT_BUILTINS: dict[str, int] = {
    "to_number": 1,
    "base64.decode": 1,
    "base64url.decode": 1,
    "json.unmarshal": 1,
}


class _Oracle:
    """A plain regorus engine that evaluates one builtin call per request."""

    def __init__(self, name: str, nargs: int) -> None:
        args = ", ".join(f"input[{i}]" for i in range(nargs))
        self._engine = regorus.Engine()
        self._engine.add_policy("lenient.rego", f"package lenient\n\nvalue := {name}({args})\n")
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        with self._lock:
            self._engine.set_input(list(args))
            try:
                return self._engine.eval_rule("data.lenient.value")
            except RuntimeError:
                return None  # undefined: the rule body that called the builtin fails


def _extension(oracle: _Oracle, nargs: int) -> Callable[..., Any]:
    if nargs == 1:
        return lambda a: oracle(a)
    return lambda *args: oracle(*args)  # pragma: no cover - all listed builtins take one argument


def install_lenient_builtins(engine: Any) -> None:
    """Register the lenient twins on ``engine`` (before its policies are added)."""
    for name, nargs in LENIENT_BUILTINS.items():
        engine.add_extension(name, nargs, _extension(_Oracle(name, nargs), nargs))
