"""Lenient builtins: kata-agent's ``set_strict_builtin_errors(false)`` for the Python binding.

kata-agent turns strict builtin errors off, so a builtin that fails (``to_number("abc")``) makes the
expression undefined, and with it the rule body, instead of aborting the whole query. The Python
binding of regorus has no such switch and aborts; 6 of the 69 kata policy test cases available here
depend on the difference (``is_ip`` in rules.rego calls ``to_number`` on parts of env values).

Faithful fix, in two parts:

* an extension ``lenient_builtin.<name>`` evaluates the real builtin on a private, plain regorus engine
  and returns ``[true, value]``, or ``[false, null]`` if the builtin raised — regorus's own values;
* a small module in the policy's package defines a function with the builtin's name, which shadows the
  builtin inside that package (regorus resolves package-local functions first)::

      to_number(a0) := y if { r := lenient_builtin.to_number(a0); r[0]; y := r[1] }

  When ``r[0]`` is false the function body fails, so the call is undefined — exactly the non-strict
  semantics. An extension cannot return "undefined" itself (Python ``None`` becomes ``null``).

Only builtins that rules.rego applies to request data and that fail on well-typed arguments are listed.
``regex.match`` is deliberately not: it runs hundreds of times per CreateContainer and a Python round
trip each time would cost milliseconds; with an invalid attacker-chosen pattern it still errors here
(INTERNAL) where kata-agent would make the body undefined (usually a denial) — both refuse the request.
"""

from __future__ import annotations

import threading
from typing import Any

from guest.policy._regorus import regorus

__all__ = ["LENIENT_BUILTINS", "LENIENT_MODULE", "install_lenient_builtins", "lenient_module"]

# builtin name -> number of arguments
LENIENT_BUILTINS: dict[str, int] = {"to_number": 1}
LENIENT_MODULE = "lenient_builtins.rego"
_EXTENSION_PREFIX = "lenient_builtin"


class _Oracle:
    """A plain regorus engine that evaluates one builtin call per request."""

    def __init__(self, name: str, nargs: int) -> None:
        args = ", ".join(f"input[{i}]" for i in range(nargs))
        self._engine = regorus.Engine()
        self._engine.add_policy("oracle.rego", f"package oracle\n\nvalue := {name}({args})\n")
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> list[Any]:
        with self._lock:
            self._engine.set_input(list(args))
            try:
                return [True, self._engine.eval_rule("data.oracle.value")]
            except RuntimeError:
                return [False, None]


def _extension_name(name: str) -> str:
    return f"{_EXTENSION_PREFIX}.{name.replace('.', '_')}"


def lenient_module(package: str = "agent_policy") -> str:
    """The Rego module shadowing each lenient builtin inside ``package`` (v0- and v1-compatible)."""
    lines = [f"package {package}", "", "import future.keywords.if", ""]
    for name, nargs in LENIENT_BUILTINS.items():
        params = ", ".join(f"a{i}" for i in range(nargs))
        lines.append(f"{name}({params}) := y if {{")
        lines.append(f"    r := {_extension_name(name)}({params})")
        lines.append("    r[0]")
        lines.append("    y := r[1]")
        lines.append("}")
        lines.append("")
    return "\n".join(lines)


def install_lenient_builtins(engine: Any, package: str = "agent_policy") -> None:
    """Register the extensions and the shadowing module on ``engine`` (before its policies)."""
    if not LENIENT_BUILTINS:
        return
    for name, nargs in LENIENT_BUILTINS.items():
        oracle = _Oracle(name, nargs)
        if nargs == 1:
            engine.add_extension(_extension_name(name), 1, lambda a, o=oracle: o(a))
        else:  # pragma: no cover - every listed builtin takes one argument
            engine.add_extension(_extension_name(name), nargs, lambda *a, o=oracle: o(*a))
    engine.add_policy(LENIENT_MODULE, lenient_module(package))
