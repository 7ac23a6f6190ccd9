"""The one place where policy outcomes become ttrpc statuses, with kata-agent's exact texts.

kata-agent builds its error replies with ``ttrpc_error(code, format!("{:?}", msg))``, so the status
message is the Rust ``Debug`` rendering of a string: wrapped in double quotes, with ``"`` and ``\\``
escaped, ``\\t \\r \\n \\0`` as such, and other non-printable or grapheme-extending characters as
``\\u{hex}`` (lower-case hex, no padding). :func:`rust_debug_str` reproduces that; "printable" follows
Rust's table, which excludes the Unicode categories Cc Cf Cs Co Cn Zl Zp Zs except the ASCII space —
the same set Python's ``str.isprintable`` rejects.
"""

from __future__ import annotations

import re
import unicodedata

from guest.policy.errors import InvalidPolicyError, PolicyDeniedError, PolicyError, PolicyInternalError
from guest.ttrpc import Code, Status

__all__ = ["rust_debug_str", "status_for"]

_SIMPLE = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\0": "\\0", '"': '\\"', "\\": "\\\\"}
# Denial texts are long (every print of the evaluation, full of JSON quotes) and mostly ASCII: quote and
# backslash are escaped with str.replace, and only characters outside printable ASCII are looked at one
# by one.
_CANDIDATES = re.compile(r"[^\x20-\x7e]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    simple = _SIMPLE.get(ch)
    if simple is not None:
        return simple
    if ch.isprintable() and unicodedata.category(ch) not in ("Mn", "Me"):
        return ch
    return f"\\u{{{ord(ch):x}}}"


def rust_debug_str(text: str) -> str:
    """``format!("{:?}", text)`` in Rust."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CANDIDATES.sub(_escape, text) + '"'


def status_for(error: PolicyError) -> Status:
    """PERMISSION_DENIED for denials, INTERNAL for machinery failures, INVALID_ARGUMENT for bad policies."""
    if isinstance(error, PolicyDeniedError):
        return Status(Code.PERMISSION_DENIED, rust_debug_str(str(error)))
    if isinstance(error, PolicyInternalError):
        return Status(Code.INTERNAL, rust_debug_str(str(error)))
    if isinstance(error, InvalidPolicyError):
        return Status(Code.INVALID_ARGUMENT, rust_debug_str(str(error)))
    return Status(Code.INTERNAL, rust_debug_str(str(error)))
