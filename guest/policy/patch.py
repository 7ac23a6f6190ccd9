"""RFC 6902 JSON Patch, applied atomically, with the json-patch crate's failure behaviour.

kata-agent applies the ``ops`` a rule returns to the whole data document (``{"pstate": ...}``) with the
``json-patch`` crate: a ``remove`` of a missing member, an ``add`` under a missing parent and similar
fail, and the crate undoes the operations already applied. We never mutate the input: the patch is
applied to a deep copy, which is returned only when every operation succeeded.

``test`` compares with :func:`json_equal`, serde_json's ``Value`` equality as the crate uses it,
not Python's ``==`` (for which ``True == 1`` and ``1 == 1.0``): a boolean equals only a boolean,
an integer only an integer, a float only a float. RFC 6902 would call ``1`` and ``1.0`` equal; we
follow the crate, because what matters is deciding as kata-agent decides. (Policy values reach us
through regorus, which turns integral numbers into integers on both sides, so only booleans
versus numbers and nested containers of them differ in practice.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from guest.policy.errors import PatchError

__all__ = ["apply_patch", "json_equal"]

# serde_json keeps integers in u64 / i64 and parses anything wider as an f64.
_INT_MIN, _INT_END = -(1 << 63), 1 << 64


def _number(value: int | float) -> tuple[bool, int | float]:
    """(is_integer, value) as serde_json would hold the number."""
    if isinstance(value, int) and _INT_MIN <= value < _INT_END:
        return True, value
    return False, float(value)


def json_equal(a: Any, b: Any) -> bool:
    """serde_json ``Value`` equality: types first (bool, integer, float, string, array, object)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _number(a) == _number(b)  # the kinds are compared first, then the values
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    return False


def _tokens(pointer: Any, index: int) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise PatchError(index, str(pointer))
    if pointer == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _array_index(token: str, length: int, index: int, path: str, allow_end: bool) -> int:
    if token == "-" and allow_end:  # noqa: S105 (JSON Pointer end-of-array marker)
        return length
    if not token.isdigit() or (len(token) > 1 and token[0] == "0") or not token.isascii():
        raise PatchError(index, path)
    i = int(token)
    if i > length or (i == length and not allow_end):
        raise PatchError(index, path)
    return i


def _parent(doc: Any, tokens: list[str], index: int, path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(index, path)
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(token, len(node), index, path, allow_end=False)]
        else:
            raise PatchError(index, path)
    return node


def _get(doc: Any, tokens: list[str], index: int, path: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, index, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(index, path)
        return parent[last]
    if isinstance(parent, list):
        return parent[_array_index(last, len(parent), index, path, allow_end=False)]
    raise PatchError(index, path)


def _add(doc: Any, tokens: list[str], value: Any, index: int, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, index, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(last, len(parent), index, path, allow_end=True), value)
    else:
        raise PatchError(index, path)
    return doc


def _remove(doc: Any, tokens: list[str], index: int, path: str) -> tuple[Any, Any]:
    if not tokens:
        raise PatchError(index, path)
    parent = _parent(doc, tokens, index, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(index, path)
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_array_index(last, len(parent), index, path, allow_end=False))
    raise PatchError(index, path)


def apply_patch(doc: Any, ops: Any) -> Any:
    """Return ``doc`` with the RFC 6902 ``ops`` applied; raise PatchError and leave ``doc`` untouched."""
    if not isinstance(ops, Sequence) or isinstance(ops, (str, bytes)):
        raise PatchError(0, "", "patch must be an array of operations")
    result = copy.deepcopy(doc)
    for index, op in enumerate(ops):
        if not isinstance(op, dict) or "path" not in op:
            raise PatchError(index, "", "invalid operation")
        path = op["path"]
        tokens = _tokens(path, index)
        kind = op.get("op")
        if kind == "add":
            if "value" not in op:
                raise PatchError(index, path, "missing value")
            result = _add(result, tokens, copy.deepcopy(op["value"]), index, path)
        elif kind == "remove":
            result, _ = _remove(result, tokens, index, path)
        elif kind == "replace":
            if "value" not in op:
                raise PatchError(index, path, "missing value")
            _get(result, tokens, index, path)
            if tokens:
                result, _ = _remove(result, tokens, index, path)
            result = _add(result, tokens, copy.deepcopy(op["value"]), index, path)
        elif kind in ("move", "copy"):
            source = op.get("from")
            from_tokens = _tokens(source, index)
            if kind == "move":
                if tokens[: len(from_tokens)] == from_tokens and len(tokens) > len(from_tokens):
                    raise PatchError(index, path, "cannot move a value into one of its children")
                result, value = _remove(result, from_tokens, index, str(source))
            else:
                value = copy.deepcopy(_get(result, from_tokens, index, str(source)))
            result = _add(result, tokens, value, index, path)
        elif kind == "test":
            if "value" not in op:
                raise PatchError(index, path, "missing value")
            if not json_equal(_get(result, tokens, index, path), op["value"]):
                raise PatchError(index, path, "value did not match")
        else:
            raise PatchError(index, str(path), f"unknown operation {kind!r}")
    return result
