"""The bundle's OCI runtime spec (config.json) as the agent's protobuf ``Spec``.

The agent's messages name fields after the Go runtime-spec structs (``Process``, ``UIDMappings``),
the JSON after their tags (``process``, ``uidMappings``), so a key maps onto the field whose name
matches it ignoring case (``ociVersion`` is ``Version``). Keys the agent's protocol has no field
for are dropped, as Kata's runtime drops what its conversion does not know; the guest's policy
judges the result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from guest.protocols import oci_pb2

from .errors import InvalidInputError

__all__ = ["spec_from_json"]

log = logging.getLogger("runtime.spec")

_RENAMES = {"ociversion": "Version"}


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _convert(value: Any, desc: Any, where: str, dropped: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"spec field {where or 'root'}", type(value).__name__, "a JSON object")
    by_name = {f.name.lower(): f for f in desc.fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        lk = key.lower()
        field = by_name.get(_RENAMES.get(lk, lk).lower())
        path = f"{where}.{key}" if where else key
        if field is None:
            dropped.append(path)
            continue
        if item is None:
            continue
        msg = field.message_type
        if msg is not None and msg.GetOptions().map_entry:
            out[field.name] = item
        elif msg is not None and _repeated(field):
            if not isinstance(item, list):
                raise InvalidInputError(f"spec field {path}", type(item).__name__, "a JSON array")
            out[field.name] = [_convert(x, msg, f"{path}[{i}]", dropped) for i, x in enumerate(item)]
        elif msg is not None:
            out[field.name] = _convert(item, msg, path, dropped)
        else:
            out[field.name] = item
    return out


def spec_from_json(data: bytes) -> oci_pb2.Spec:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError("bundle config.json", str(e)[:200], "JSON") from None
    dropped: list[str] = []
    converted = _convert(doc, oci_pb2.Spec.DESCRIPTOR, "", dropped)
    if dropped:
        log.info("event=spec_fields_dropped fields=%s", ",".join(dropped[:20]))
    spec = oci_pb2.Spec()
    try:
        json_format.ParseDict(converted, spec)
    except json_format.ParseError as e:
        raise InvalidInputError(
            "bundle config.json", str(e)[:300], "a runtime spec the agent protocol can carry"
        ) from None
    return spec
